"""The aiokafka shell: broker plumbing, topics, consumers, producer and DLQ."""
