/*
 * relay.server._dataplane: the relay's UDP data plane, in C.
 *
 * The Python cores decide everything (sans-IO, relay/turn/server.py); this module only
 * moves datagrams. It does three things per datagram that Python would otherwise spend
 * most of a relay's CPU on:
 *
 *   1. Batched I/O on the listening sockets: recvmmsg(2) in, sendmmsg(2) out.
 *   2. ChannelData forwarding on *installed routes*. The TURN core installs, refreshes
 *      and removes routes (relay/turn/routes.py) whenever a channel binding or a
 *      permission changes; a route is a cache of a decision the core already made:
 *        inbound  (listener, client address, channel number) -> relayed socket, peer
 *        outbound (relayed socket, peer address)             -> listener, client, channel
 *      each with an expiry (the earlier of the channel's and the permission's). A
 *      datagram that matches a live route is relayed here; every other datagram (STUN,
 *      unknown or expired channels, data without a channel, anything malformed) is
 *      handed back to Python untouched, and the core handles it as before.
 *   3. Readiness of all relayed sockets through one epoll descriptor, so the event loop
 *      wakes once for any number of ready relayed sockets.
 *
 * Routes are objects of type Route held in ordinary dicts that Python owns: one dict per
 * listener for inbound routes (key: 2-byte channel number + the client's sockaddr) and
 * one for outbound routes (key: 4-byte native fd + the peer's sockaddr). Keys are the raw
 * sockaddr bytes the kernel writes, encoded for Python by sockaddr() below, so that both
 * sides build identical keys.
 *
 * Linux only (recvmmsg, sendmmsg, epoll).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUFFER_SIZE 2048         /* larger than any datagram a STUN server accepts */
#define MAX_BATCHES_PER_WAKEUP 2 /* then yield: relayed sockets and timers get a turn */
#define RELAY_EVENTS 256
#define RELAY_BUFFER 65536
#define ADDRESS_CACHE_MAX 65536
#define CHANNEL_HEADER 4

/* ------------------------------------------------------------------ sockaddr codec */

static int
sockaddr_from_tuple(int family, PyObject *addr, struct sockaddr_storage *out, socklen_t *len)
{
    /* addr: (host, port) or, for IPv6, (host, port[, flowinfo[, scope_id]]). */
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2 || PyTuple_GET_SIZE(addr) > 4) {
        PyErr_SetString(PyExc_ValueError, "address must be a (host, port[, flowinfo, scope_id]) tuple");
        return -1;
    }
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
    if (host == NULL)
        return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port %ld is outside 0-65535", port);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        if (PyTuple_GET_SIZE(addr) != 2) {
            PyErr_SetString(PyExc_ValueError, "an IPv4 address is a (host, port) tuple");
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "%s is not an IPv4 address", host);
            return -1;
        }
        *len = sizeof(struct sockaddr_in);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        unsigned long flowinfo = 0, scope_id = 0;
        if (PyTuple_GET_SIZE(addr) > 2) {
            flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
            if (flowinfo == (unsigned long)-1 && PyErr_Occurred())
                return -1;
        }
        if (PyTuple_GET_SIZE(addr) > 3) {
            scope_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
            if (scope_id == (unsigned long)-1 && PyErr_Occurred())
                return -1;
        }
        if (flowinfo > 0xfffff || scope_id > 0xffffffffUL) {
            PyErr_SetString(PyExc_OverflowError, "flowinfo or scope_id out of range");
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_flowinfo = htonl((uint32_t)flowinfo);
        sin6->sin6_scope_id = (uint32_t)scope_id;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "%s is not an IPv6 address", host);
            return -1;
        }
        *len = sizeof(struct sockaddr_in6);
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unsupported address family %d", family);
    return -1;
}

static PyObject *
tuple_from_sockaddr(const struct sockaddr_storage *name, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (name->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)name;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, (int)ntohs(sin->sin_port));
    }
    if (name->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)name;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, (int)ntohs(sin6->sin6_port),
                             (unsigned int)ntohl(sin6->sin6_flowinfo),
                             (unsigned int)sin6->sin6_scope_id);
    }
    PyErr_Format(PyExc_ValueError, "sockaddr of family %d and length %d is not IPv4 or IPv6",
                 (int)name->ss_family, (int)len);
    return NULL;
}

static PyObject *
dp_sockaddr(PyObject *module, PyObject *args)
{
    int family;
    PyObject *addr;
    struct sockaddr_storage name;
    socklen_t len;
    if (!PyArg_ParseTuple(args, "iO:sockaddr", &family, &addr))
        return NULL;
    if (sockaddr_from_tuple(family, addr, &name, &len) < 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)&name, len);
}

static PyObject *
dp_address(PyObject *module, PyObject *arg)
{
    struct sockaddr_storage name;
    char *raw;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &raw, &len) < 0)
        return NULL;
    if (len < 2 || len > (Py_ssize_t)sizeof(name)) {
        PyErr_Format(PyExc_ValueError, "a sockaddr of %zd bytes is not IPv4 or IPv6", len);
        return NULL;
    }
    memset(&name, 0, sizeof(name));
    memcpy(&name, raw, (size_t)len);
    return tuple_from_sockaddr(&name, (socklen_t)len);
}

/* ------------------------------------------------------------------ Route */

typedef struct {
    PyObject_HEAD
    int fd;          /* inbound: the relayed socket to send from; outbound: listener index */
    int channel;     /* the channel number (outbound: written into the ChannelData header) */
    double expiry;   /* relayed only while now < expiry */
    unsigned long long packets;
    unsigned long long bytes;
    socklen_t namelen;
    struct sockaddr_storage name; /* the destination */
} Route;

static int
route_init(Route *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "destination", "channel", "expiry", NULL};
    Py_buffer destination;
    int fd, channel;
    double expiry;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iy*id:Route", kwlist, &fd, &destination,
                                     &channel, &expiry))
        return -1;
    if (destination.len < (Py_ssize_t)sizeof(struct sockaddr_in) ||
        destination.len > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
        PyErr_Format(PyExc_ValueError, "destination: a sockaddr of %zd bytes", destination.len);
        PyBuffer_Release(&destination);
        return -1;
    }
    if (fd < 0 || channel < 0x4000 || channel > 0x7fff) {
        PyErr_Format(PyExc_ValueError, "fd %d or channel 0x%04x out of range", fd, channel);
        PyBuffer_Release(&destination);
        return -1;
    }
    memset(&self->name, 0, sizeof(self->name));
    memcpy(&self->name, destination.buf, (size_t)destination.len);
    self->namelen = (socklen_t)destination.len;
    PyBuffer_Release(&destination);
    self->fd = fd;
    self->channel = channel;
    self->expiry = expiry;
    self->packets = self->bytes = 0;
    return 0;
}

static PyObject *
route_destination(Route *self, void *closure)
{
    return PyBytes_FromStringAndSize((const char *)&self->name, self->namelen);
}

static PyMemberDef route_members[] = {
    {"fd", T_INT, offsetof(Route, fd), READONLY, "relayed socket fd (inbound) or listener index (outbound)"},
    {"channel", T_INT, offsetof(Route, channel), READONLY, "channel number"},
    {"expiry", T_DOUBLE, offsetof(Route, expiry), 0, "relayed while now < expiry"},
    {"packets", T_ULONGLONG, offsetof(Route, packets), 0, "datagrams relayed on this route"},
    {"bytes", T_ULONGLONG, offsetof(Route, bytes), 0, "application bytes relayed on this route"},
    {NULL},
};

static PyGetSetDef route_getset[] = {
    {"destination", (getter)route_destination, NULL, "the destination sockaddr", NULL},
    {NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "relay.server._dataplane.Route",
    .tp_doc = "Route(fd, destination, channel, expiry): one installed forwarding decision.",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)route_init,
    .tp_members = route_members,
    .tp_getset = route_getset,
};

/* ------------------------------------------------------------------ DataPlane */

typedef struct {
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    struct sockaddr_storage names[BATCH];
    unsigned char data[BATCH][BUFFER_SIZE];
} Vector;

typedef struct {
    int fd;
    int family;
    int queued; /* messages waiting in tx */
    Vector *rx;
    Vector *tx;
} Listener;

typedef struct {
    PyObject_HEAD
    Listener *listeners;
    Py_ssize_t count;
    int epfd;
    unsigned char *relay_buffer;
    PyObject *inbound;   /* list: one dict per listener */
    PyObject *outbound;  /* dict */
    PyObject *addresses; /* sockaddr bytes -> address tuple */
    PyObject *names;     /* address tuple -> sockaddr bytes */
    unsigned long long to_peer_packets, to_peer_bytes, to_client_packets, to_client_bytes;
    unsigned long long truncated, send_failures;
} DataPlane;

static void
vector_init(Vector *v)
{
    memset(v->msgs, 0, sizeof(v->msgs));
    for (int i = 0; i < BATCH; i++) {
        v->iovs[i].iov_base = v->data[i];
        v->iovs[i].iov_len = BUFFER_SIZE;
        v->msgs[i].msg_hdr.msg_name = &v->names[i];
        v->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        v->msgs[i].msg_hdr.msg_iov = &v->iovs[i];
        v->msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

static void
dataplane_free_buffers(DataPlane *self)
{
    if (self->listeners != NULL) {
        for (Py_ssize_t i = 0; i < self->count; i++) {
            PyMem_RawFree(self->listeners[i].rx);
            PyMem_RawFree(self->listeners[i].tx);
        }
        PyMem_RawFree(self->listeners);
        self->listeners = NULL;
    }
    self->count = 0;
    PyMem_RawFree(self->relay_buffer);
    self->relay_buffer = NULL;
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
}

static int
dataplane_traverse(DataPlane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inbound);
    Py_VISIT(self->outbound);
    Py_VISIT(self->addresses);
    Py_VISIT(self->names);
    return 0;
}

static int
dataplane_clear(DataPlane *self)
{
    Py_CLEAR(self->inbound);
    Py_CLEAR(self->outbound);
    Py_CLEAR(self->addresses);
    Py_CLEAR(self->names);
    return 0;
}

static void
dataplane_dealloc(DataPlane *self)
{
    PyObject_GC_UnTrack(self);
    dataplane_clear(self);
    dataplane_free_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
dataplane_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    DataPlane *self = (DataPlane *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static int
dataplane_init(DataPlane *self, PyObject *args, PyObject *kwargs)
{
    /* DataPlane(listeners): a sequence of (fd, family), one per listening UDP socket. */
    static char *kwlist[] = {"listeners", NULL};
    PyObject *listeners, *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:DataPlane", kwlist, &listeners))
        return -1;
    if (self->listeners != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "DataPlane is already initialised");
        return -1;
    }
    seq = PySequence_Fast(listeners, "listeners must be a sequence of (fd, family)");
    if (seq == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    self->listeners = PyMem_RawCalloc((size_t)(count ? count : 1), sizeof(Listener));
    self->relay_buffer = PyMem_RawMalloc(RELAY_BUFFER);
    if (self->listeners == NULL || self->relay_buffer == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    self->inbound = PyList_New(count);
    self->outbound = PyDict_New();
    self->addresses = PyDict_New();
    self->names = PyDict_New();
    if (!self->inbound || !self->outbound || !self->addresses || !self->names) {
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        int fd, family;
        PyObject *routes;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ii", &fd, &family)) {
            Py_DECREF(seq);
            return -1;
        }
        if (family != AF_INET && family != AF_INET6) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "listener %zd: family %d is not IPv4 or IPv6", i, family);
            return -1;
        }
        Listener *l = &self->listeners[i];
        self->count = i + 1; /* buffers of listeners [0, count) are freed on error */
        l->fd = fd;
        l->family = family;
        l->rx = PyMem_RawMalloc(sizeof(Vector));
        l->tx = PyMem_RawMalloc(sizeof(Vector));
        routes = PyDict_New();
        if (l->rx == NULL || l->tx == NULL || routes == NULL) {
            Py_XDECREF(routes);
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        PyList_SET_ITEM(self->inbound, i, routes);
        vector_init(l->rx);
        vector_init(l->tx);
    }
    Py_DECREF(seq);
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int
check_open(DataPlane *self)
{
    if (self->listeners == NULL || self->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "DataPlane is closed");
        return -1;
    }
    return 0;
}

static Listener *
listener_at(DataPlane *self, Py_ssize_t index)
{
    if (check_open(self) < 0)
        return NULL;
    if (index < 0 || index >= self->count) {
        PyErr_Format(PyExc_IndexError, "no listener %zd", index);
        return NULL;
    }
    return &self->listeners[index];
}

/* The address tuple of a kernel-written sockaddr, through the cache. New reference. */
static PyObject *
cached_address(DataPlane *self, const struct sockaddr_storage *name, socklen_t len)
{
    PyObject *key = PyBytes_FromStringAndSize((const char *)name, len);
    if (key == NULL)
        return NULL;
    PyObject *addr = PyDict_GetItemWithError(self->addresses, key);
    if (addr != NULL) {
        Py_DECREF(key);
        Py_INCREF(addr);
        return addr;
    }
    if (PyErr_Occurred() || (addr = tuple_from_sockaddr(name, len)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(self->addresses) >= ADDRESS_CACHE_MAX) {
        PyDict_Clear(self->addresses);
        PyDict_Clear(self->names);
    }
    if (PyDict_SetItem(self->addresses, key, addr) < 0 ||
        PyDict_SetItem(self->names, addr, key) < 0) {
        Py_DECREF(key);
        Py_DECREF(addr);
        return NULL;
    }
    Py_DECREF(key);
    return addr;
}

/* Send the first ``queued`` messages of a listener's tx vector. A message the kernel
 * refuses (full buffer, unroutable destination) is counted and skipped: UDP may drop. */
static void
flush_listener(DataPlane *self, Listener *l)
{
    int start = 0, queued = l->queued;
    l->queued = 0;
    while (start < queued) {
        int sent = sendmmsg(l->fd, &l->tx->msgs[start], (unsigned int)(queued - start), 0);
        if (sent <= 0) {
            if (sent < 0 && errno == EINTR)
                continue;
            self->send_failures++;
            start++;
            continue;
        }
        start += sent;
    }
}

static void
flush_all(DataPlane *self)
{
    for (Py_ssize_t i = 0; i < self->count; i++)
        if (self->listeners[i].queued)
            flush_listener(self, &self->listeners[i]);
}

/* Room for one more message in a listener's tx vector (flushing it when full). */
static int
tx_slot(DataPlane *self, Listener *l)
{
    if (l->queued == BATCH)
        flush_listener(self, l);
    return l->queued;
}

/* RFC 8656 §12.4/§12.5: a ChannelData datagram is relayed only when it holds at least
 * 4 + length bytes and nothing but padding (up to the next multiple of 4) follows. */
static int
try_forward_inbound(DataPlane *self, PyObject *routes, const unsigned char *p, size_t len,
                    const struct sockaddr_storage *name, socklen_t namelen, double now)
{
    unsigned char key[2 + sizeof(struct sockaddr_storage)];
    size_t length = ((size_t)p[2] << 8) | p[3];
    size_t end = CHANNEL_HEADER + length;
    if (len < end || len > ((end + 3) & ~(size_t)3))
        return 0; /* the core drops and counts it */
    key[0] = p[0];
    key[1] = p[1];
    memcpy(key + 2, name, namelen);
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, 2 + (Py_ssize_t)namelen);
    if (k == NULL)
        return -1;
    Route *route = (Route *)PyDict_GetItemWithError(routes, k);
    Py_DECREF(k);
    if (route == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!(route->expiry > now))
        return 0;
    if (sendto(route->fd, p + CHANNEL_HEADER, length, MSG_DONTWAIT,
               (const struct sockaddr *)&route->name, route->namelen) < 0) {
        self->send_failures++;
        return 1;
    }
    route->packets++;
    route->bytes += length;
    self->to_peer_packets++;
    self->to_peer_bytes += length;
    return 1;
}

static int
append_miss(PyObject **misses, PyObject *item)
{
    if (item == NULL)
        return -1;
    if (*misses == NULL && (*misses = PyList_New(0)) == NULL) {
        Py_DECREF(item);
        return -1;
    }
    int rc = PyList_Append(*misses, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
dataplane_drain_listener(DataPlane *self, PyObject *args)
{
    /* drain_listener(index, now) -> list of (data, address) the core must handle, or
     * None. Reads up to MAX_BATCHES_PER_WAKEUP batches; relays ChannelData on routes. */
    Py_ssize_t index;
    double now;
    if (!PyArg_ParseTuple(args, "nd:drain_listener", &index, &now))
        return NULL;
    Listener *l = listener_at(self, index);
    if (l == NULL)
        return NULL;
    PyObject *routes = PyList_GET_ITEM(self->inbound, index);
    PyObject *misses = NULL;
    Vector *rx = l->rx;
    for (int b = 0; b < MAX_BATCHES_PER_WAKEUP; b++) {
        int n = recvmmsg(l->fd, rx->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break; /* EAGAIN, EINTR, or an error the next wakeup reports again */
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &rx->msgs[i].msg_hdr;
            const unsigned char *p = rx->data[i];
            size_t len = rx->msgs[i].msg_len;
            socklen_t namelen = h->msg_namelen;
            int flags = h->msg_flags;
            h->msg_namelen = sizeof(struct sockaddr_storage); /* for the next call */
            if (flags & MSG_TRUNC) {
                /* Cut to fit the buffer: what is left could even look valid. Drop it. */
                self->truncated++;
                continue;
            }
            if (len >= CHANNEL_HEADER && (p[0] & 0xC0) == 0x40 && PyDict_GET_SIZE(routes)) {
                int forwarded = try_forward_inbound(self, routes, p, len, &rx->names[i], namelen, now);
                if (forwarded < 0)
                    goto error;
                if (forwarded)
                    continue;
            }
            PyObject *addr = cached_address(self, &rx->names[i], namelen);
            if (addr == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_ValueError))
                    goto error;
                PyErr_Clear(); /* not IPv4/IPv6: cannot happen on these sockets; drop */
                continue;
            }
            PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
            if (data == NULL) {
                Py_DECREF(addr);
                goto error;
            }
            PyObject *item = PyTuple_Pack(2, data, addr);
            Py_DECREF(data);
            Py_DECREF(addr);
            if (append_miss(&misses, item) < 0)
                goto error;
        }
        if (n < BATCH)
            break;
    }
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
error:
    Py_XDECREF(misses);
    return NULL;
}

static PyObject *
dataplane_queue(DataPlane *self, PyObject *args)
{
    /* queue(index, payload, address): send payload from listener ``index`` with the next
     * flush. Returns False (nothing queued) when the payload does not fit a slot. */
    Py_ssize_t index;
    Py_buffer payload;
    PyObject *addr;
    if (!PyArg_ParseTuple(args, "ny*O:queue", &index, &payload, &addr))
        return NULL;
    Listener *l = listener_at(self, index);
    if (l == NULL || payload.len > BUFFER_SIZE) {
        PyBuffer_Release(&payload);
        if (l == NULL)
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *name = PyDict_GetItemWithError(self->names, addr);
    struct sockaddr_storage encoded;
    socklen_t namelen;
    if (name != NULL) {
        namelen = (socklen_t)PyBytes_GET_SIZE(name);
        memcpy(&encoded, PyBytes_AS_STRING(name), namelen);
    }
    else if (PyErr_Occurred() || sockaddr_from_tuple(l->family, addr, &encoded, &namelen) < 0) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    int slot = tx_slot(self, l);
    memcpy(l->tx->data[slot], payload.buf, (size_t)payload.len);
    l->tx->iovs[slot].iov_len = (size_t)payload.len;
    memcpy(&l->tx->names[slot], &encoded, namelen);
    l->tx->msgs[slot].msg_hdr.msg_namelen = namelen;
    l->queued++;
    PyBuffer_Release(&payload);
    Py_RETURN_TRUE;
}

static PyObject *
dataplane_flush(DataPlane *self, PyObject *args)
{
    /* flush([index]): send what is queued on one listener, or on all. */
    Py_ssize_t index = -1;
    if (!PyArg_ParseTuple(args, "|n:flush", &index))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (index >= 0) {
        Listener *l = listener_at(self, index);
        if (l == NULL)
            return NULL;
        if (l->queued)
            flush_listener(self, l);
        Py_RETURN_NONE;
    }
    flush_all(self);
    Py_RETURN_NONE;
}

static int
as_fd(PyObject *arg)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%ld is not a file descriptor", value);
        return -1;
    }
    return (int)value;
}

static PyObject *
dataplane_add_relay(DataPlane *self, PyObject *arg)
{
    int fd = as_fd(arg);
    if (fd < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    struct epoll_event event = {.events = EPOLLIN, .data = {.fd = fd}};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
dataplane_remove_relay(DataPlane *self, PyObject *arg)
{
    /* Before the socket is closed; a descriptor that is already gone is fine. */
    int fd = as_fd(arg);
    if (fd < 0)
        return NULL;
    if (self->epfd >= 0 && epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 &&
        errno != ENOENT && errno != EBADF)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* An outbound route's ChannelData into its listener's tx vector (RFC 8656 §12.5: over
 * UDP the padding is not sent). Returns 1 when queued, 0 when the core must handle it. */
static int
try_forward_outbound(DataPlane *self, int fd, const unsigned char *p, size_t len,
                     const struct sockaddr_storage *name, socklen_t namelen, double now)
{
    unsigned char key[sizeof(int) + sizeof(struct sockaddr_storage)];
    if (len + CHANNEL_HEADER > BUFFER_SIZE)
        return 0;
    memcpy(key, &fd, sizeof(int));
    memcpy(key + sizeof(int), name, namelen);
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, (Py_ssize_t)(sizeof(int) + namelen));
    if (k == NULL)
        return -1;
    Route *route = (Route *)PyDict_GetItemWithError(self->outbound, k);
    Py_DECREF(k);
    if (route == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!(route->expiry > now) || route->fd >= self->count)
        return 0;
    Listener *l = &self->listeners[route->fd];
    int slot = tx_slot(self, l);
    unsigned char *out = l->tx->data[slot];
    out[0] = (unsigned char)(route->channel >> 8);
    out[1] = (unsigned char)route->channel;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    memcpy(out + CHANNEL_HEADER, p, len);
    l->tx->iovs[slot].iov_len = len + CHANNEL_HEADER;
    memcpy(&l->tx->names[slot], &route->name, route->namelen);
    l->tx->msgs[slot].msg_hdr.msg_namelen = route->namelen;
    l->queued++;
    route->packets++;
    route->bytes += len;
    self->to_client_packets++;
    self->to_client_bytes += len;
    return 1;
}

static PyObject *
dataplane_drain_relays(DataPlane *self, PyObject *args)
{
    /* drain_relays(now) -> list of (fd, data, address) the core must handle, or None.
     * One datagram per ready relayed socket per call: readiness is level-triggered, so a
     * socket with more queued is reported again on the next wakeup. Flushes whatever it
     * queued on the listeners. */
    double now;
    struct epoll_event events[RELAY_EVENTS];
    if (!PyArg_ParseTuple(args, "d:drain_relays", &now))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    int n = epoll_wait(self->epfd, events, RELAY_EVENTS, 0);
    PyObject *misses = NULL;
    for (int e = 0; e < n; e++) {
        int fd = events[e].data.fd;
        struct sockaddr_storage name;
        socklen_t namelen = sizeof(name);
        ssize_t len = recvfrom(fd, self->relay_buffer, RELAY_BUFFER, MSG_DONTWAIT,
                               (struct sockaddr *)&name, &namelen);
        if (len < 0)
            continue; /* EAGAIN, or an ICMP error for an earlier send: nothing to relay */
        int forwarded = try_forward_outbound(self, fd, self->relay_buffer, (size_t)len, &name,
                                             namelen, now);
        if (forwarded < 0)
            goto error;
        if (forwarded)
            continue;
        PyObject *addr = cached_address(self, &name, namelen);
        if (addr == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError))
                goto error;
            PyErr_Clear();
            continue;
        }
        PyObject *item = Py_BuildValue("(iy#N)", fd, (const char *)self->relay_buffer,
                                       (Py_ssize_t)len, addr);
        if (append_miss(&misses, item) < 0)
            goto error;
    }
    flush_all(self);
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
error:
    Py_XDECREF(misses);
    return NULL;
}

static PyObject *
dataplane_close(DataPlane *self, PyObject *unused)
{
    /* Flush what is queued and release the buffers and the epoll descriptor. The
     * listening and relayed sockets belong to their Python owners. */
    if (self->listeners != NULL)
        flush_all(self);
    dataplane_free_buffers(self);
    Py_RETURN_NONE;
}

static PyObject *
dataplane_epoll_fd(DataPlane *self, void *closure)
{
    return PyLong_FromLong(self->epfd);
}

static PyObject *
dataplane_closed(DataPlane *self, void *closure)
{
    return PyBool_FromLong(self->listeners == NULL);
}

static PyMethodDef dataplane_methods[] = {
    {"drain_listener", (PyCFunction)dataplane_drain_listener, METH_VARARGS,
     "drain_listener(index, now) -> [(data, address)] | None: datagrams for the core"},
    {"queue", (PyCFunction)dataplane_queue, METH_VARARGS,
     "queue(index, payload, address) -> bool: send from listener index at the next flush"},
    {"flush", (PyCFunction)dataplane_flush, METH_VARARGS, "flush([index]): send what is queued"},
    {"add_relay", (PyCFunction)dataplane_add_relay, METH_O, "add_relay(fd): watch a relayed socket"},
    {"remove_relay", (PyCFunction)dataplane_remove_relay, METH_O, "remove_relay(fd)"},
    {"drain_relays", (PyCFunction)dataplane_drain_relays, METH_VARARGS,
     "drain_relays(now) -> [(fd, data, address)] | None: peer datagrams for the core"},
    {"close", (PyCFunction)dataplane_close, METH_NOARGS, "flush and release the buffers"},
    {NULL},
};

static PyMemberDef dataplane_members[] = {
    {"inbound", T_OBJECT_EX, offsetof(DataPlane, inbound), READONLY,
     "one dict per listener: channel (2 bytes) + client sockaddr -> Route"},
    {"outbound", T_OBJECT_EX, offsetof(DataPlane, outbound), READONLY,
     "relayed fd (4 bytes, native) + peer sockaddr -> Route"},
    {"to_peer_packets", T_ULONGLONG, offsetof(DataPlane, to_peer_packets), 0, NULL},
    {"to_peer_bytes", T_ULONGLONG, offsetof(DataPlane, to_peer_bytes), 0, NULL},
    {"to_client_packets", T_ULONGLONG, offsetof(DataPlane, to_client_packets), 0, NULL},
    {"to_client_bytes", T_ULONGLONG, offsetof(DataPlane, to_client_bytes), 0, NULL},
    {"truncated", T_ULONGLONG, offsetof(DataPlane, truncated), 0, "datagrams over the buffer size"},
    {"send_failures", T_ULONGLONG, offsetof(DataPlane, send_failures), 0, "sends the kernel refused"},
    {NULL},
};

static PyGetSetDef dataplane_getset[] = {
    {"epoll_fd", (getter)dataplane_epoll_fd, NULL, "readable when a relayed socket is", NULL},
    {"closed", (getter)dataplane_closed, NULL, "whether close() was called", NULL},
    {NULL},
};

static PyTypeObject DataPlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "relay.server._dataplane.DataPlane",
    .tp_doc = "DataPlane(listeners): batched listener I/O and ChannelData on routes.",
    .tp_basicsize = sizeof(DataPlane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = dataplane_new,
    .tp_init = (initproc)dataplane_init,
    .tp_dealloc = (destructor)dataplane_dealloc,
    .tp_traverse = (traverseproc)dataplane_traverse,
    .tp_clear = (inquiry)dataplane_clear,
    .tp_methods = dataplane_methods,
    .tp_members = dataplane_members,
    .tp_getset = dataplane_getset,
};

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"sockaddr", dp_sockaddr, METH_VARARGS,
     "sockaddr(family, address) -> bytes: the struct sockaddr the kernel uses"},
    {"address", dp_address, METH_O, "address(sockaddr) -> the socket module's address tuple"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "relay.server._dataplane",
    .m_doc = "The relay's UDP data plane: batched listener I/O and ChannelData routes.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__dataplane(void)
{
    if (PyType_Ready(&RouteType) < 0 || PyType_Ready(&DataPlaneType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Route", (PyObject *)&RouteType) < 0 ||
        PyModule_AddObjectRef(m, "DataPlane", (PyObject *)&DataPlaneType) < 0 ||
        PyModule_AddIntConstant(m, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(m, "BUFFER_SIZE", BUFFER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
