// Shared by the criterion benches (included with `#[path]`): the benchmark's record, as the
// harness writes it (benches/harness/data.rs).

/// A 200-byte benchmark record, as preloaded by the harness.
pub const RECORD: &[u8] = br#"{"id":"id-0000000042","seq":42,"amount":3325.99,"ts_us":1700000000000000,"payload":"qwhdkzmtfmqjxvbnhqjzlkmswpoeirutyqhgfkdjslamznxbcvqwertyuioplkjhgfdsazxcvbnmqwertyuiopasdfghjklzxcvbnmqaaa"}"#;

/// Its key.
pub const KEY: &[u8] = b"id-0000000042";
