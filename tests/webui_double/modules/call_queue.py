"""modules/call_queue.py: the lock every GPU job takes (a FIFO lock upstream)."""

import threading

queue_lock = threading.Lock()
