"""What the perf-buffer and ring-buffer readers share: waiting on epoll.

A reader subclass provides ``drain(out=None) -> list`` (take what is in the
rings, without waiting), ``release()`` (give the space of the last batch back
to the kernel) and ``self._epoll`` (an epoll object watching its fds).
"""


class EpollReader:
    def fileno(self):
        """The epoll fd: readable when some ring has data."""
        return self._epoll.fileno()

    def poll(self, timeout_ms=-1, callback=None):
        """Wait up to ``timeout_ms`` (-1: forever) for events; return them as a list.

        With ``callback``, call ``callback(events)`` with the batch, release its
        space at once, and return the number of events.
        """
        events = self.drain()
        if not events and timeout_ms != 0:
            try:
                self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
            except InterruptedError:
                pass
            events = self.drain(events)
        if callback is None:
            return events
        if events:
            callback(events)
        self.release()
        return len(events)
