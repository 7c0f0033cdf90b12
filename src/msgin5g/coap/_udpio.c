/* msgin5g.coap._udpio: the CoAP endpoint's UDP socket, read and written here
 * instead of by the event loop's datagram transport.
 *
 * Why: with IP_RECVERR (ICMP port unreachable reported at once, so an exchange
 * with a closed port fails in milliseconds instead of after ~93 s of
 * retransmissions), the socket's error queue holds one entry per ICMP error.
 * uvloop 0.23's libuv reads that queue itself when epoll reports EPOLLERR and
 * hands the negative errno to uvloop as a ~4 GB length: the process dies with
 * SIGSEGV (libuv issue #5242, fixed by libuv PR #5243, not in uvloop 0.23). The
 * Python drain in error_received cannot close the window: libuv may read the
 * queue in the same poll, before Python runs. So libuv must never see this
 * socket: the event loop watches an epoll descriptor of our own (add_reader on
 * Socket.poll_fileno()), which holds the socket. An epoll descriptor becomes
 * readable when a descriptor in it is ready and never reports an error itself;
 * libuv's poll handle (which uvloop's add_reader uses, and which stops for
 * good on POLLERR) only ever sees a clean readable descriptor.
 *
 * What: Socket(fd, family, on_datagram, on_refused, on_error, fallback)
 *   read()        what epoll says is ready: the error queue is drained first
 *                 (on_refused(addr) per ICMP port unreachable, then SO_ERROR
 *                 cleared so the next send does not fail with the held error),
 *                 queued sends are flushed when writable, and datagrams are
 *                 read with recvmmsg(2), BATCH at a time, at most READ_BUDGET
 *                 batches per call (the loop's other work runs in between; the
 *                 descriptor stays readable, level-triggered);
 *                 on_datagram(data, addr) per datagram
 *   sendto(d, a)  sendto(2) at once; EAGAIN/ENOBUFS queue the datagram (in
 *                 order, QUEUE at most, beyond that it is dropped and counted:
 *                 UDP, and CoAP retransmits) and the epoll set waits for
 *                 EPOLLOUT; an address this module cannot pack (a host name, an
 *                 IPv6 scope) goes to fallback(data, addr) (Python's sendto)
 *   close()       forgets the epoll set and the queue; the socket stays the
 *                 caller's
 *   stats()       received, batches, sent, queued, queued_max, dropped,
 *                 refused, errors
 *
 * Design choices:
 *   - Address tuples are cached by address (direct-mapped, ADDR_CACHE slots):
 *     the same few thousand UEs send again and again, and one tuple object
 *     per UE also makes the endpoint's dict lookups identity hits.
 *   - A send or receive error that an earlier ICMP error left in the socket
 *     (ECONNREFUSED and friends, returned once by the next call) is not this
 *     datagram's: the send is retried once, the receive goes on.
 *   - A callback that raises an Exception is reported as unraisable and the
 *     batch goes on (a datagram is never lost because another one failed);
 *     a BaseException (KeyboardInterrupt) stops read() and propagates.
 *   - The packing of addresses mirrors _udpsend.c's pack_address: two
 *     extension modules cannot share static C without a header, which the
 *     compiled set's staleness check (one source file per module) would miss.
 *     For the same reason this is one file of ~650 lines (over the project's
 *     600): sending, receiving, addresses and the type object, in that order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32            /* datagrams per recvmmsg */
#define BUF 65536           /* bytes per datagram buffer (UDP's maximum) */
#define READ_BUDGET 4       /* recvmmsg calls per read() */
#define QUEUE 8192          /* datagrams waiting for the socket to be writable */
#define ADDR_CACHE 4096     /* power of two */
#define ERR_DRAIN (1 << 20) /* error-queue entries per read() at most */

typedef struct {
    PyObject *data;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} Pending;

typedef struct {
    struct sockaddr_storage addr;
    PyObject *tuple; /* NULL: empty */
} Cached;

typedef struct {
    PyObject_HEAD
    int fd;
    int family;
    int epfd;          /* -1: closed */
    int writing;       /* EPOLLOUT is in the epoll set */
    PyObject *on_datagram;
    PyObject *on_refused;
    PyObject *on_error;
    PyObject *fallback;
    char *bufs;        /* BATCH * BUF */
    Pending *queue;    /* QUEUE slots, a ring */
    size_t qhead, qcount;
    Cached *cache;     /* ADDR_CACHE slots */
    uint64_t received, batches, sent, queued_max, dropped, refused, errors;
} Socket;

/* An error the socket held from an earlier ICMP message, returned once. */
static int held_error(int err) {
    return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH
        || err == EHOSTDOWN || err == ENETDOWN || err == EPROTO;
}

/* Call fn(args...) and keep going on an Exception; -1 on a BaseException. */
static int call(PyObject *fn, PyObject *const *args, size_t nargs) {
    PyObject *r = PyObject_Vectorcall(fn, args, nargs, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyErr_WriteUnraisable(fn);
    return 0;
}

static int report_error(Socket *self, int err) {
    self->errors++;
    if (self->on_error == Py_None) {
        return 0;
    }
    PyObject *code = PyLong_FromLong(err);
    if (code == NULL) {
        return -1;
    }
    int r = call(self->on_error, &code, 1);
    Py_DECREF(code);
    return r;
}

/* ---------------------------------------------------------------- addresses */

static size_t slot_of(const struct sockaddr_storage *sa) {
    uint64_t h;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        h = ((uint64_t)in->sin_addr.s_addr << 16) ^ in->sin_port;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uint64_t a, b;
        memcpy(&a, &in6->sin6_addr, 8);
        memcpy(&b, (const char *)&in6->sin6_addr + 8, 8);
        h = a ^ (b * 31) ^ in6->sin6_port ^ in6->sin6_scope_id;
    }
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 40) & (ADDR_CACHE - 1);
}

static int same_address(const struct sockaddr_storage *a,
                        const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) {
        return 0;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id
        && x->sin6_flowinfo == y->sin6_flowinfo
        && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
}

/* (host, port) or (host, port, flowinfo, scope_id), as Python's socket module. */
static PyObject *make_tuple(const struct sockaddr_storage *sa) {
    char host[INET6_ADDRSTRLEN];
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port),
                             ntohl(in6->sin6_flowinfo), in6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* A new reference to the tuple of sa (cached); NULL with an exception set. */
static PyObject *address(Socket *self, const struct sockaddr_storage *sa) {
    if (sa->ss_family != AF_INET && sa->ss_family != AF_INET6) {
        return make_tuple(sa);
    }
    Cached *c = &self->cache[slot_of(sa)];
    if (c->tuple != NULL && same_address(&c->addr, sa)) {
        return Py_NewRef(c->tuple);
    }
    PyObject *t = make_tuple(sa);
    if (t == NULL) {
        return NULL;
    }
    Py_XSETREF(c->tuple, Py_NewRef(t));
    memcpy(&c->addr, sa, sa->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                  : sizeof(struct sockaddr_in6));
    return t;
}

/* Pack a Python address tuple for the socket's family; 0 when it cannot. */
static int pack_address(Socket *self, PyObject *addr, struct sockaddr_storage *out,
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
    const char *text = PyUnicode_AsUTF8(host);
    if (port < 0 || port > 65535 || text == NULL) {
        PyErr_Clear();
        return 0;
    }
    memset(out, 0, sizeof(*out));
    if (self->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *outlen = sizeof(*in);
        return inet_pton(AF_INET, text, &in->sin_addr) == 1;
    }
    if (self->family != AF_INET6) {
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1) {
        return 0; /* also "fe80::1%eth0": the fallback resolves scopes */
    }
    if (PyTuple_GET_SIZE(addr) >= 4) {
        unsigned long flow = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
        unsigned long scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        in6->sin6_flowinfo = htonl((uint32_t)flow);
        in6->sin6_scope_id = (uint32_t)scope;
    }
    *outlen = sizeof(*in6);
    return 1;
}

/* ------------------------------------------------------------------ sending */

static int watch(Socket *self, int writing) {
    if (self->writing == writing || self->epfd < 0) {
        return 0;
    }
    struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0),
                             .data.fd = self->fd};
    if (epoll_ctl(self->epfd, EPOLL_CTL_MOD, self->fd, &ev) < 0) {
        return -1;
    }
    self->writing = writing;
    return 0;
}

/* sendto(2), retried once for an error held from an earlier datagram;
 * 0 sent, else the errno. */
static int send_one(Socket *self, const char *data, Py_ssize_t len,
                    const struct sockaddr_storage *addr, socklen_t addrlen) {
    int retried = 0;
    for (;;) {
        if (sendto(self->fd, data, (size_t)len, 0, (const struct sockaddr *)addr,
                   addrlen) >= 0) {
            self->sent++;
            return 0;
        }
        int err = errno;
        if (err == EINTR || (held_error(err) && !retried++)) {
            continue;
        }
        return err;
    }
}

static int would_block(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

static void enqueue(Socket *self, PyObject *data, const struct sockaddr_storage *addr,
                    socklen_t addrlen) {
    if (self->qcount == QUEUE) {
        self->dropped++;
        return;
    }
    Pending *p = &self->queue[(self->qhead + self->qcount) % QUEUE];
    p->data = Py_NewRef(data);
    memcpy(&p->addr, addr, addrlen);
    p->addrlen = addrlen;
    self->qcount++;
    if (self->qcount > self->queued_max) {
        self->queued_max = self->qcount;
    }
    if (watch(self, 1) < 0) {
        self->errors++;
    }
}

/* Send what is queued until the socket is full again; -1 on a BaseException. */
static int flush(Socket *self) {
    while (self->qcount) {
        Pending *p = &self->queue[self->qhead];
        int err = send_one(self, PyBytes_AS_STRING(p->data), PyBytes_GET_SIZE(p->data),
                           &p->addr, p->addrlen);
        if (would_block(err)) {
            return 0;
        }
        Py_CLEAR(p->data);
        self->qhead = (self->qhead + 1) % QUEUE;
        self->qcount--;
        if (err && report_error(self, err) < 0) {
            return -1;
        }
    }
    self->qhead = 0;
    if (watch(self, 0) < 0) {
        self->errors++;
    }
    return 0;
}

static PyObject *Socket_sendto(Socket *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sendto(data, addr)");
        return NULL;
    }
    PyObject *data = args[0];
    if (self->epfd < 0) {
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    if (!PyBytes_Check(data) || !pack_address(self, args[1], &addr, &addrlen)) {
        return PyObject_Vectorcall(self->fallback, args, 2, NULL);
    }
    if (self->qcount) { /* keep the order behind what waits */
        enqueue(self, data, &addr, addrlen);
        Py_RETURN_NONE;
    }
    int err = send_one(self, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &addr,
                       addrlen);
    if (would_block(err)) {
        enqueue(self, data, &addr, addrlen);
    } else if (err && report_error(self, err) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- receiving */

/* Empty the error queue, reporting each refusing destination; clear SO_ERROR. */
static int drain_errors(Socket *self) {
    for (int k = 0; k < ERR_DRAIN; k++) {
        struct sockaddr_storage name;
        char control[512], one;
        struct iovec iov = {.iov_base = &one, .iov_len = 1};
        struct msghdr m = {.msg_name = &name, .msg_namelen = sizeof name,
                           .msg_iov = &iov, .msg_iovlen = 1,
                           .msg_control = control, .msg_controllen = sizeof control};
        if (recvmsg(self->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break; /* EAGAIN: empty */
        }
        int refused = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
            if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR)
                || (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
                struct sock_extended_err ee;
                memcpy(&ee, CMSG_DATA(c), sizeof ee);
                refused |= ee.ee_errno == ECONNREFUSED;
            }
        }
        if (!refused || m.msg_namelen == 0) {
            continue;
        }
        self->refused++;
        if (self->on_refused == Py_None) {
            continue;
        }
        PyObject *addr = address(self, &name);
        if (addr == NULL) {
            return -1;
        }
        int r = call(self->on_refused, &addr, 1);
        Py_DECREF(addr);
        if (r < 0) {
            return -1;
        }
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(self->fd, SOL_SOCKET, SO_ERROR, &err, &len); /* reading clears it */
    return 0;
}

/* Up to READ_BUDGET batches of datagrams to on_datagram; -1 on a BaseException. */
static int receive(Socket *self) {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage names[BATCH];
    for (int round = 0; round < READ_BUDGET && self->epfd >= 0; round++) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = self->bufs + (size_t)i * BUF;
            iov[i].iov_len = BUF;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof names[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(self->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            int err = errno;
            if (err == EINTR || held_error(err)) {
                continue; /* an earlier ICMP error, returned once: read on */
            }
            if (err == EAGAIN || err == EWOULDBLOCK) {
                return 0;
            }
            return report_error(self, err);
        }
        self->batches++;
        self->received += (uint64_t)got;
        for (int i = 0; i < got; i++) {
            PyObject *args[2];
            args[0] = PyBytes_FromStringAndSize(iov[i].iov_base, msgs[i].msg_len);
            if (args[0] == NULL) {
                return -1;
            }
            args[1] = address(self, &names[i]);
            if (args[1] == NULL) {
                Py_DECREF(args[0]);
                return -1;
            }
            int r = call(self->on_datagram, args, 2);
            Py_DECREF(args[0]);
            Py_DECREF(args[1]);
            if (r < 0) {
                return -1;
            }
        }
        if (got < BATCH) {
            return 0;
        }
    }
    return 0;
}

static PyObject *Socket_read(Socket *self, PyObject *Py_UNUSED(unused)) {
    if (self->epfd < 0) {
        Py_RETURN_NONE;
    }
    struct epoll_event ev;
    int n = epoll_wait(self->epfd, &ev, 1, 0);
    if (n <= 0) {
        Py_RETURN_NONE;
    }
    if ((ev.events & EPOLLERR) && drain_errors(self) < 0) {
        return NULL;
    }
    if ((ev.events & EPOLLOUT) && self->epfd >= 0 && flush(self) < 0) {
        return NULL;
    }
    if ((ev.events & EPOLLIN) && receive(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------- object */

static PyObject *Socket_poll_fileno(Socket *self, PyObject *Py_UNUSED(unused)) {
    return PyLong_FromLong(self->epfd);
}

static void forget(Socket *self) {
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    while (self->qcount) {
        Py_CLEAR(self->queue[self->qhead].data);
        self->qhead = (self->qhead + 1) % QUEUE;
        self->qcount--;
    }
    if (self->cache != NULL) {
        for (size_t i = 0; i < ADDR_CACHE; i++) {
            Py_CLEAR(self->cache[i].tuple);
        }
    }
}

static PyObject *Socket_close(Socket *self, PyObject *Py_UNUSED(unused)) {
    forget(self);
    Py_RETURN_NONE;
}

static PyObject *Socket_stats(Socket *self, PyObject *Py_UNUSED(unused)) {
    return Py_BuildValue(
        "{sKsKsKsnsKsKsKsK}", "received", (unsigned long long)self->received,
        "batches", (unsigned long long)self->batches, "sent",
        (unsigned long long)self->sent, "queued", (Py_ssize_t)self->qcount,
        "queued_max", (unsigned long long)self->queued_max, "dropped",
        (unsigned long long)self->dropped, "refused", (unsigned long long)self->refused,
        "errors", (unsigned long long)self->errors);
}

static int Socket_init(Socket *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"fd", "family", "on_datagram", "on_refused",
                            "on_error", "fallback", NULL};
    int fd, family;
    PyObject *on_datagram, *on_refused, *on_error, *fallback;
    if (self->epfd >= 0 || self->bufs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Socket already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOOO", names, &fd, &family,
                                     &on_datagram, &on_refused, &on_error, &fallback)) {
        return -1;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    if (!PyCallable_Check(on_datagram) || !PyCallable_Check(fallback)
        || (on_refused != Py_None && !PyCallable_Check(on_refused))
        || (on_error != Py_None && !PyCallable_Check(on_error))) {
        PyErr_SetString(PyExc_TypeError, "the callbacks must be callable (or None)");
        return -1;
    }
    self->bufs = PyMem_RawMalloc((size_t)BATCH * BUF);
    self->queue = PyMem_RawCalloc(QUEUE, sizeof(Pending));
    self->cache = PyMem_RawCalloc(ADDR_CACHE, sizeof(Cached));
    if (self->bufs == NULL || self->queue == NULL || self->cache == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (self->epfd < 0 || epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        forget(self);
        return -1;
    }
    self->fd = fd;
    self->family = family;
    self->on_datagram = Py_NewRef(on_datagram);
    self->on_refused = Py_NewRef(on_refused);
    self->on_error = Py_NewRef(on_error);
    self->fallback = Py_NewRef(fallback);
    return 0;
}

static PyObject *Socket_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    Socket *self = (Socket *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->epfd = -1;
        self->fd = -1;
    }
    return (PyObject *)self;
}

static int Socket_traverse(Socket *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_datagram);
    Py_VISIT(self->on_refused);
    Py_VISIT(self->on_error);
    Py_VISIT(self->fallback);
    return 0;
}

static int Socket_clear(Socket *self) {
    Py_CLEAR(self->on_datagram);
    Py_CLEAR(self->on_refused);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->fallback);
    return 0;
}

static void Socket_dealloc(Socket *self) {
    PyObject_GC_UnTrack(self);
    forget(self);
    Socket_clear(self);
    PyMem_RawFree(self->bufs);
    PyMem_RawFree(self->queue);
    PyMem_RawFree(self->cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Socket_methods[] = {
    {"read", (PyCFunction)Socket_read, METH_NOARGS,
     "Handle what the socket has ready: errors, pending sends, datagrams."},
    {"sendto", (PyCFunction)(void (*)(void))Socket_sendto, METH_FASTCALL,
     "sendto(data, addr): send now, or queue until the socket is writable."},
    {"poll_fileno", (PyCFunction)Socket_poll_fileno, METH_NOARGS,
     "The descriptor the event loop watches (add_reader) for read()."},
    {"close", (PyCFunction)Socket_close, METH_NOARGS,
     "Forget the poll set and what is queued (the socket stays open)."},
    {"stats", (PyCFunction)Socket_stats, METH_NOARGS,
     "received, batches, sent, queued, queued_max, dropped, refused, errors."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SocketType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "msgin5g.coap._udpio.Socket",
    .tp_basicsize = sizeof(Socket),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A UDP socket read with recvmmsg and written with sendto, "
              "watched by the event loop through an epoll descriptor of its own.",
    .tp_new = Socket_new,
    .tp_init = (initproc)Socket_init,
    .tp_dealloc = (destructor)Socket_dealloc,
    .tp_traverse = (traverseproc)Socket_traverse,
    .tp_clear = (inquiry)Socket_clear,
    .tp_methods = Socket_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "msgin5g.coap._udpio",
    .m_doc = "The CoAP endpoint's UDP socket, read and written without libuv.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__udpio(void) {
    if (PyType_Ready(&SocketType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Socket", (PyObject *)&SocketType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
