# Produces N keyed records (K keys, key n -> partition n % P) and waits for delivery.
import sys, time
from confluent_kafka import Producer
bootstrap, topic, n, keys, parts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 500000, "enable.idempotence": True})
import random
random.seed(7)
t = time.time()
for i in range(n):
    k = random.randrange(keys)
    while True:
        try:
            p.produce(topic, key=b"k%d" % k, value=b"v", partition=k % parts)
            break
        except BufferError:
            p.poll(0.05)
    if i % 10000 == 0:
        p.poll(0)
p.flush()
print(f"produced {n} in {time.time()-t:.1f}s")
