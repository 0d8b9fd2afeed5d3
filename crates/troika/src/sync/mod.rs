//! Thread synchronisation and queues, in the shape of Python's `threading` and `queue`.
