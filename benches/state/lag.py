# Prints the group's committed total and the input's end total.
import sys
from confluent_kafka import Consumer, TopicPartition
bootstrap, group, topic, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
tps = [TopicPartition(topic, p) for p in range(parts)]
committed = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
print(committed, end)
c.close()
