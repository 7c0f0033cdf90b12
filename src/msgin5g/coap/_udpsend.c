/* msgin5g.coap._udpsend: the CoAP endpoint's datagrams sent by a thread of their own.
 *
 * What: a Sender owns one POSIX thread that writes the datagrams handed to
 * Sender.send() to a UDP socket with sendmmsg(2), never holding the GIL. On
 * loopback (and on any host that is itself the receiver) the kernel runs the
 * receiving side of a datagram inside the sender's sendto call: on the server's
 * event-loop thread that was ~18 % of its time per message (docs/performance.md).
 * Here the event loop only copies the datagram and its address into a ring;
 * the kernel's work moves to the second core.
 *
 * Design choices:
 *   - One producer (whoever holds the GIL: send() never releases it), one
 *     consumer (the thread): a single-producer single-consumer ring of fixed
 *     slots with C11 atomics. A datagram up to SLOT_INLINE bytes is copied into
 *     its slot; a larger one into a malloc'd buffer the thread frees.
 *   - A full ring is back-pressure, not loss: send() then calls the fallback
 *     (the event loop's own transport.sendto) in the caller's thread.
 *   - An address send() cannot pack (a host name, an IPv6 scope "%eth0", a
 *     family the socket does not have) goes to the fallback too.
 *   - The thread sleeps on a condition variable when the ring is empty. A
 *     cross-core wake-up costs the waker ~5 µs on this project's VM (more than
 *     the send) and adds latency, so it is paid at most once per turn of the
 *     event loop: send() asks schedule() (loop.call_soon) for a flush() after
 *     the turn, which wakes the thread if it sleeps (Dekker order with seq_cst
 *     on `waiting` and `head`). Waking per datagram made the server slower
 *     than no thread at all (0.83x, docs/performance.md).
 *   - A quiet loop sends itself: while the thread sleeps, the ring is empty
 *     and neither this turn nor the last handed over more than
 *     DIRECT_PER_TURN datagrams, send() calls sendto() at once (in order, as
 *     nothing is queued). Under light load that is the latency and the CPU of
 *     the thread-less server; under load, turns are long and the thread
 *     takes the datagrams.
 *   - A send error other than EAGAIN/ENOBUFS (an ICMP error the socket held,
 *     IP_RECVERR) is retried once, as the datagram it failed was not the one
 *     refused, then counted and reported to on_error(errno) with the GIL taken
 *     (rare): the Python side hands it to the event loop, which drains the
 *     socket's error queue as it did before this thread existed. A batch that
 *     sendmmsg sent only in part lost its error in the kernel: on_error(0)
 *     asks for the drain all the same, and the rest is sent again. EAGAIN
 *     waits for POLLOUT (at most 100 ms per try).
 *   - close() drains what is queued (bounded by the ring), joins the thread with
 *     the GIL released (the thread may be waiting for the GIL to report an
 *     error), and is idempotent; the socket itself stays the caller's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define SLOTS 4096          /* power of two */
#define SLOT_INLINE 1472    /* an Ethernet MTU's UDP payload */
#define BATCH 64            /* datagrams per sendmmsg */
#define DIRECT_PER_TURN 4   /* at most sent by the caller in a quiet loop turn */

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    Py_ssize_t len;
    char *heap;             /* NULL: the data is inline */
    char data[SLOT_INLINE];
} Slot;

typedef struct {
    PyObject_HEAD
    int fd;
    int family;
    PyObject *fallback;     /* callable(data, addr) */
    PyObject *on_error;     /* callable(errno) or None */
    PyObject *schedule;     /* callable(): runs flush() soon (loop.call_soon), or None */
    int flush_pending;      /* schedule() was called, flush() has not run */
    int turn_sends;         /* datagrams handed over in this loop turn */
    int busy;               /* the last turn handed over more than DIRECT_PER_TURN */
    Slot *ring;
    _Atomic uint64_t head;  /* written by the producer */
    _Atomic uint64_t tail;  /* written by the thread */
    _Atomic int waiting;    /* the thread sleeps (or is about to) */
    _Atomic int closing;
    int started;
    int closed;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* counters */
    _Atomic uint64_t sent;
    _Atomic uint64_t failed;
    uint64_t fallbacks;     /* producer only */
    uint64_t direct;        /* producer only */
    uint64_t wakeups;       /* producer only */
    uint64_t depth_max;     /* producer only */
} Sender;

static void report_error(Sender *self, int err) {
    if (self->on_error == NULL || self->on_error == Py_None) {
        return;
    }
    PyGILState_STATE state = PyGILState_Ensure();
    PyObject *r = PyObject_CallFunction(self->on_error, "i", err);
    if (r == NULL) {
        PyErr_WriteUnraisable(self->on_error);
    } else {
        Py_DECREF(r);
    }
    PyGILState_Release(state);
}

static int wait_writable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 100);
}

/* Send slots [tail, tail + n); returns how many were consumed (sent or dropped). */
static unsigned send_batch(Sender *self, uint64_t tail, unsigned n) {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (unsigned i = 0; i < n; i++) {
        Slot *s = &self->ring[(tail + i) & (SLOTS - 1)];
        iov[i].iov_base = s->heap != NULL ? s->heap : s->data;
        iov[i].iov_len = (size_t)s->len;
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_name = &s->addr;
        msgs[i].msg_hdr.msg_namelen = s->addrlen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int retried = 0;
    for (;;) {
        int done = sendmmsg(self->fd, msgs, n, 0);
        if (done > 0) {
            atomic_fetch_add(&self->sent, (uint64_t)done);
            if ((unsigned)done < n) {
                /* a datagram after the first failed and the kernel dropped its
                 * error (sendmmsg returns the count): most likely an ICMP error
                 * for an earlier datagram; the socket's error queue still holds
                 * it (IP_RECVERR) and level-triggered polls report it until it
                 * is read, so the event loop must be told to drain it. The
                 * failed datagram is retried by the caller's next batch. */
                report_error(self, 0);
            }
            return (unsigned)done;
        }
        int err = errno;
        if (err == EINTR) {
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
            if (wait_writable(self->fd) == 0 && atomic_load(&self->closing)) {
                atomic_fetch_add(&self->failed, 1);
                return 1; /* closing and the socket stays full: give up on one */
            }
            continue;
        }
        if (!retried && err != EBADF && err != ENOTSOCK && err != EMSGSIZE
            && err != EINVAL) {
            retried = 1; /* a held ICMP error was returned for this datagram */
            report_error(self, err);
            continue;
        }
        atomic_fetch_add(&self->failed, 1);
        report_error(self, err);
        return 1; /* drop the first datagram, keep the rest */
    }
}

static void *run(void *arg) {
    Sender *self = (Sender *)arg;
    for (;;) {
        uint64_t tail = atomic_load_explicit(&self->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&self->head, memory_order_acquire);
        if (head != tail) {
            uint64_t avail = head - tail;
            unsigned n = avail > BATCH ? BATCH : (unsigned)avail;
            unsigned used = send_batch(self, tail, n);
            for (unsigned i = 0; i < used; i++) {
                Slot *s = &self->ring[(tail + i) & (SLOTS - 1)];
                if (s->heap != NULL) {
                    free(s->heap);
                    s->heap = NULL;
                }
            }
            atomic_store_explicit(&self->tail, tail + used, memory_order_release);
            continue;
        }
        if (atomic_load(&self->closing)) {
            return NULL;
        }
        atomic_store(&self->waiting, 1);
        if (atomic_load(&self->head) != tail || atomic_load(&self->closing)) {
            atomic_store(&self->waiting, 0);
            continue;
        }
        pthread_mutex_lock(&self->lock);
        while (atomic_load(&self->waiting) && !atomic_load(&self->closing)) {
            pthread_cond_wait(&self->cond, &self->lock);
        }
        pthread_mutex_unlock(&self->lock);
    }
}

static void wake(Sender *self) {
    pthread_mutex_lock(&self->lock);
    atomic_store(&self->waiting, 0);
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
}

/* Pack a Python address tuple for the socket's family; 0 when it cannot. */
static int pack_address(Sender *self, PyObject *addr, struct sockaddr_storage *out,
                        socklen_t *outlen) {
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2) {
        return 0;
    }
    PyObject *host = PyTuple_GET_ITEM(addr, 0);
    PyObject *port_obj = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_Check(host) || !PyLong_Check(port_obj)) {
        return 0;
    }
    long port = PyLong_AsLong(port_obj);
    if (port < 0 || port > 65535) {
        PyErr_Clear();
        return 0;
    }
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL) {
        PyErr_Clear();
        return 0;
    }
    memset(out, 0, sizeof(*out));
    if (self->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, text, &sin->sin_addr) != 1) {
            return 0;
        }
        *outlen = sizeof(*sin);
        return 1;
    }
    if (self->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1) {
            return 0; /* also "fe80::1%eth0": the fallback resolves scopes */
        }
        if (PyTuple_GET_SIZE(addr) >= 4) {
            unsigned long flow = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
            unsigned long scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
            if (PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            sin6->sin6_flowinfo = htonl((uint32_t)flow);
            sin6->sin6_scope_id = (uint32_t)scope;
        }
        *outlen = sizeof(*sin6);
        return 1;
    }
    return 0;
}

static PyObject *call_fallback(Sender *self, PyObject *data, PyObject *addr) {
    self->fallbacks++;
    return PyObject_CallFunctionObjArgs(self->fallback, data, addr, NULL);
}

/* Make sure flush() runs after this turn of the event loop (once per turn);
 * 0 when it cannot be scheduled. */
static int schedule_flush(Sender *self) {
    if (self->flush_pending) {
        return 1;
    }
    if (self->schedule == Py_None) {
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(self->schedule);
    if (r == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(r);
    self->flush_pending = 1;
    return 1;
}

static PyObject *Sender_send(Sender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(data, addr)");
        return NULL;
    }
    PyObject *data = args[0];
    PyObject *addr = args[1];
    if (self->closed) {
        return call_fallback(self, data, addr);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint64_t head = atomic_load_explicit(&self->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&self->tail, memory_order_acquire);
    if (head - tail >= SLOTS) {
        PyBuffer_Release(&view);
        return call_fallback(self, data, addr); /* full: the caller sends */
    }
    Slot *s = &self->ring[head & (SLOTS - 1)];
    if (!pack_address(self, addr, &s->addr, &s->addrlen)) {
        PyBuffer_Release(&view);
        return call_fallback(self, data, addr);
    }
    if (self->turn_sends <= DIRECT_PER_TURN) {
        self->turn_sends++; /* counts up to DIRECT_PER_TURN + 1: "more" */
    }
    if (!self->busy && self->turn_sends <= DIRECT_PER_TURN && head == tail
        && atomic_load(&self->waiting) && schedule_flush(self)) {
        /* a quiet loop (this turn and the last one handed over few datagrams)
         * and the thread sleeps: waking it (a cross-core wake-up, a VM exit on a
         * virtual machine) would cost more time and latency than the send, so
         * the caller sends, in order (the ring is empty). The loop's transport
         * takes over on any error (EAGAIN buffering, error_received for ICMP
         * errors). flush() closes the turn. */
        ssize_t sent = sendto(self->fd, view.buf, (size_t)view.len, 0,
                              (struct sockaddr *)&s->addr, s->addrlen);
        int err = errno;
        PyBuffer_Release(&view);
        if (sent >= 0) {
            self->direct++;
            Py_RETURN_NONE;
        }
        if (err != EAGAIN && err != EWOULDBLOCK && err != ENOBUFS && err != EINTR) {
            /* most likely an ICMP error the socket held for an earlier datagram
             * (IP_RECVERR): this sendto consumed it, so the loop would never
             * hear of it, and the error queue it leaves keeps epoll reporting
             * EPOLLERR: hand it over as the thread does, then resend */
            report_error(self, err);
        }
        return call_fallback(self, data, addr);
    }
    if (view.len <= SLOT_INLINE) {
        memcpy(s->data, view.buf, (size_t)view.len);
        s->heap = NULL;
    } else {
        s->heap = malloc((size_t)view.len);
        if (s->heap == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        memcpy(s->heap, view.buf, (size_t)view.len);
    }
    s->len = view.len;
    PyBuffer_Release(&view);
    atomic_store_explicit(&self->head, head + 1, memory_order_seq_cst);
    if (head + 1 - tail > self->depth_max) {
        self->depth_max = head + 1 - tail;
    }
    /* wake the thread once, after this turn of the event loop: the datagrams
     * of one turn leave in one sendmmsg, and a cross-core wake-up (a VM exit on
     * a virtual machine) is paid per turn, not per datagram */
    if (atomic_load(&self->waiting) && !schedule_flush(self)) {
        self->wakeups++;
        wake(self);
    }
    Py_RETURN_NONE;
}

static PyObject *Sender_flush(Sender *self, PyObject *Py_UNUSED(unused)) {
    self->flush_pending = 0;
    self->busy = self->turn_sends > DIRECT_PER_TURN;
    self->turn_sends = 0;
    if (!self->closed && atomic_load(&self->waiting)) {
        self->wakeups++;
        wake(self);
    }
    Py_RETURN_NONE;
}

static void stop(Sender *self) {
    if (self->closed) {
        return;
    }
    self->closed = 1;
    if (self->started) {
        atomic_store(&self->closing, 1);
        Py_BEGIN_ALLOW_THREADS
        wake(self);
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->started = 0;
    }
    /* free what the thread did not send (it drains before it stops) */
    uint64_t tail = atomic_load(&self->tail), head = atomic_load(&self->head);
    for (; tail != head; tail++) {
        Slot *s = &self->ring[tail & (SLOTS - 1)];
        free(s->heap);
        s->heap = NULL;
    }
}

static PyObject *Sender_close(Sender *self, PyObject *Py_UNUSED(unused)) {
    stop(self);
    Py_RETURN_NONE;
}

static PyObject *Sender_stats(Sender *self, PyObject *Py_UNUSED(unused)) {
    uint64_t head = atomic_load(&self->head), tail = atomic_load(&self->tail);
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i}", "direct", (unsigned long long)self->direct,
        "sent", (unsigned long long)atomic_load(&self->sent),
        "failed", (unsigned long long)atomic_load(&self->failed), "fallbacks",
        (unsigned long long)self->fallbacks, "wakeups", (unsigned long long)self->wakeups,
        "queued", (unsigned long long)(head - tail), "depth_max",
        (unsigned long long)self->depth_max, "sleeping", atomic_load(&self->waiting));
}

static int Sender_init(Sender *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "family", "fallback", "on_error", "schedule", NULL};
    int fd, family;
    PyObject *fallback, *on_error = Py_None, *schedule = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiO|OO", kwlist, &fd, &family,
                                     &fallback, &on_error, &schedule)) {
        return -1;
    }
    if (self->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sender is already initialised");
        return -1;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    self->ring = calloc(SLOTS, sizeof(Slot));
    if (self->ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->fd = fd;
    self->family = family;
    Py_INCREF(fallback);
    self->fallback = fallback;
    Py_INCREF(on_error);
    self->on_error = on_error;
    Py_INCREF(schedule);
    self->schedule = schedule;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    int err = pthread_create(&self->thread, NULL, run, self);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->started = 1;
    return 0;
}

static void Sender_dealloc(Sender *self) {
    stop(self);
    if (self->ring != NULL) {
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->cond);
        free(self->ring);
        self->ring = NULL;
    }
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->schedule);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Sender_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Sender_send, METH_FASTCALL,
     "send(data, addr): queue one datagram (the fallback sends it when the ring is "
     "full or the address is not numeric)."},
    {"flush", (PyCFunction)Sender_flush, METH_NOARGS,
     "Wake the thread if it sleeps (what schedule() must make the loop call soon)."},
    {"close", (PyCFunction)Sender_close, METH_NOARGS,
     "Send what is queued, stop the thread (idempotent); later sends use the fallback."},
    {"stats", (PyCFunction)Sender_stats, METH_NOARGS,
     "Counters: direct, sent, failed, fallbacks, wakeups, queued, depth_max; "
     "sleeping (1: the thread waits for work)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "msgin5g.coap._udpsend.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sender(fd, family, fallback, on_error=None): datagrams to fd from a thread.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "msgin5g.coap._udpsend",
    "The CoAP endpoint's datagrams sent by a thread of their own.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udpsend(void) {
    if (PyType_Ready(&SenderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
