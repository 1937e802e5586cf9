/*
 * rendezvous.store._peertable: one swarm of the memory store in flat C arrays.
 *
 * The same structure as rendezvous/store/swarm.py's ``Swarm`` (the reference, and the
 * fallback where this is not built), for the common case it serves fastest: every peer's
 * data has one length (``width``: BitTorrent compact addresses) and every registration
 * one TTL. A 10^5-peer swarm in Python objects costs a cache miss per object touched;
 * here a peer is a few array cells:
 *
 *   entries   stable ids: key (a str, owned), its hash, expiry, seeder flag, sequence,
 *             prev/next in refresh order (oldest first: with one TTL and expiries never
 *             handed out below the latest one, that is expiry order), position in order.
 *   order     the entries as a uniformly random permutation (inside-out Fisher-Yates on
 *             insert, the last one moved into the hole on removal), with ``blob``, their
 *             data inline in the same order: a sample is a run from a random start, one
 *             or two memcpy.
 *   table     open addressing (linear probing, backward-shift deletion) from key to entry;
 *             str hashes are SipHash with a per-process key, so clients cannot flood it.
 *
 * Randomness comes from the caller (a float in [0, 1) per insert or sample), so this
 * holds no generator of its own and tests can drive it. Keys must be exact str.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t width;
    double ttl;
    double latest;
    /* entries */
    Py_ssize_t cap;
    Py_ssize_t used;      /* entry ids handed out so far (free ones are on free_head) */
    int32_t free_head;
    PyObject **keys;
    Py_hash_t *hashes;
    double *expires;
    unsigned char *seeder;
    long long *seq;
    int32_t *prev;
    int32_t *next;
    int32_t *pos;
    /* permutation */
    int32_t *order;
    char *blob;
    Py_ssize_t count;
    /* index */
    int32_t *table;       /* entry + 1; 0: empty */
    Py_ssize_t table_size; /* a power of two, at least twice count */
    /* refresh order */
    int32_t head;
    int32_t tail;
    long long sequence;
    Py_ssize_t seeders;
} PeerTable;

#define MAX_ENTRIES (1 << 30)

static int grow_entries(PeerTable *t) {
    Py_ssize_t cap = t->cap ? t->cap * 2 : 8;
    if (cap > MAX_ENTRIES) {
        PyErr_SetString(PyExc_MemoryError, "peer table is full");
        return -1;
    }
#define GROW(field, type)                                                     \
    do {                                                                      \
        type *p = PyMem_Realloc(t->field, (size_t)cap * sizeof(type));        \
        if (p == NULL) {                                                      \
            PyErr_NoMemory();                                                 \
            return -1;                                                        \
        }                                                                     \
        t->field = p;                                                         \
    } while (0)
    GROW(keys, PyObject *);
    GROW(hashes, Py_hash_t);
    GROW(expires, double);
    GROW(seeder, unsigned char);
    GROW(seq, long long);
    GROW(prev, int32_t);
    GROW(next, int32_t);
    GROW(pos, int32_t);
    GROW(order, int32_t);
#undef GROW
    if (t->width > 0) {
        char *b = PyMem_Realloc(t->blob, (size_t)cap * (size_t)t->width);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->blob = b;
    }
    t->cap = cap;
    return 0;
}

static int rehash(PeerTable *t, Py_ssize_t size) {
    int32_t *table = PyMem_Calloc((size_t)size, sizeof(int32_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = (size_t)size - 1;
    for (Py_ssize_t k = 0; k < t->count; k++) {
        int32_t e = t->order[k];
        size_t i = (size_t)t->hashes[e] & mask;
        while (table[i] != 0)
            i = (i + 1) & mask;
        table[i] = e + 1;
    }
    PyMem_Free(t->table);
    t->table = table;
    t->table_size = size;
    return 0;
}

/* The entry of ``key`` (>= 0), -1 when absent, -2 on error; *at: its table index. */
static int32_t find(PeerTable *t, PyObject *key, Py_hash_t hash, size_t *at) {
    size_t mask = (size_t)t->table_size - 1;
    size_t i = (size_t)hash & mask;
    for (;;) {
        int32_t v = t->table[i];
        if (v == 0) {
            *at = i;
            return -1;
        }
        int32_t e = v - 1;
        if (t->hashes[e] == hash) {
            PyObject *k = t->keys[e];
            if (k == key) {
                *at = i;
                return e;
            }
            int cmp = PyUnicode_Compare(k, key);
            if (cmp == -1 && PyErr_Occurred())
                return -2;
            if (cmp == 0) {
                *at = i;
                return e;
            }
        }
        i = (i + 1) & mask;
    }
}

static void table_delete(PeerTable *t, size_t i) {
    size_t mask = (size_t)t->table_size - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        int32_t v = t->table[j];
        if (v == 0)
            break;
        size_t k = (size_t)t->hashes[v - 1] & mask; /* where it wants to be */
        /* Move it into the hole unless its home lies cyclically in (i, j]. */
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            t->table[i] = v;
            i = j;
        }
    }
    t->table[i] = 0;
}

static void unlink_entry(PeerTable *t, int32_t e) {
    int32_t p = t->prev[e], n = t->next[e];
    if (p >= 0)
        t->next[p] = n;
    else
        t->head = n;
    if (n >= 0)
        t->prev[n] = p;
    else
        t->tail = p;
}

static void append_entry(PeerTable *t, int32_t e) {
    t->prev[e] = t->tail;
    t->next[e] = -1;
    if (t->tail >= 0)
        t->next[t->tail] = e;
    else
        t->head = e;
    t->tail = e;
}

static void remove_entry(PeerTable *t, int32_t e, size_t at) {
    Py_ssize_t w = t->width;
    Py_ssize_t p = t->pos[e], last = t->count - 1;
    if (p != last) {
        int32_t moved = t->order[last];
        t->order[p] = moved;
        t->pos[moved] = (int32_t)p;
        if (w > 0)
            memcpy(t->blob + p * w, t->blob + last * w, (size_t)w);
    }
    t->count--;
    unlink_entry(t, e);
    table_delete(t, at);
    t->seeders -= t->seeder[e];
    Py_CLEAR(t->keys[e]);
    t->next[e] = t->free_head;
    t->free_head = e;
}

static int ready(PeerTable *t) {
    if (t->table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PeerTable is not initialised");
        return -1;
    }
    return 0;
}

static int check_key(PyObject *key) {
    if (!PyUnicode_CheckExact(key)) {
        PyErr_Format(PyExc_TypeError, "peer id must be str, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    return 0;
}

static int check_unit(double r) {
    if (!(r >= 0.0 && r < 1.0)) {
        PyErr_SetString(PyExc_ValueError, "random draw must be in [0, 1)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ methods */

static int PeerTable_init(PeerTable *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"width", "ttl", NULL};
    Py_ssize_t width;
    double ttl;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nd", kwlist, &width, &ttl))
        return -1;
    if (width < 1 || width > 4096) {
        PyErr_SetString(PyExc_ValueError, "width must be 1 to 4096 bytes");
        return -1;
    }
    if (!(ttl > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "ttl must be positive");
        return -1;
    }
    if (t->table != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PeerTable is already initialised");
        return -1;
    }
    t->width = width;
    t->ttl = ttl;
    t->latest = -Py_HUGE_VAL;
    t->free_head = t->head = t->tail = -1;
    if (grow_entries(t) < 0 || rehash(t, 16) < 0)
        return -1;
    return 0;
}

static void PeerTable_dealloc(PeerTable *t) {
    for (Py_ssize_t k = 0; k < t->count; k++)
        Py_CLEAR(t->keys[t->order[k]]);
    PyMem_Free(t->keys);
    PyMem_Free(t->hashes);
    PyMem_Free(t->expires);
    PyMem_Free(t->seeder);
    PyMem_Free(t->seq);
    PyMem_Free(t->prev);
    PyMem_Free(t->next);
    PyMem_Free(t->pos);
    PyMem_Free(t->order);
    PyMem_Free(t->blob);
    PyMem_Free(t->table);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *PeerTable_put(PeerTable *t, PyObject *const *args, Py_ssize_t nargs) {
    if (ready(t) < 0)
        return NULL;
    /* put(peer_id, data, seeder, now, draw) -> bool (new) */
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "put(peer_id, data, seeder, now, draw)");
        return NULL;
    }
    PyObject *key = args[0], *data = args[1];
    if (check_key(key) < 0)
        return NULL;
    if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) != t->width) {
        PyErr_Format(PyExc_ValueError, "data must be %zd bytes", t->width);
        return NULL;
    }
    int seeder = PyObject_IsTrue(args[2]);
    if (seeder < 0)
        return NULL;
    double now = PyFloat_AsDouble(args[3]);
    double draw = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred() || check_unit(draw) < 0)
        return NULL;
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return NULL;
    if (t->count == 0)
        t->latest = -Py_HUGE_VAL; /* an emptied swarm starts afresh, as swarm.py's */
    double expires = now + t->ttl;
    if (expires < t->latest)
        expires = t->latest; /* never below the latest: refresh order stays expiry order */
    Py_ssize_t w = t->width;
    size_t at;
    int32_t e = find(t, key, hash, &at);
    if (e == -2)
        return NULL;
    if (e >= 0) {
        t->latest = expires;
        t->expires[e] = expires;
        t->seeders += seeder - t->seeder[e];
        t->seeder[e] = (unsigned char)seeder;
        memcpy(t->blob + (Py_ssize_t)t->pos[e] * w, PyBytes_AS_STRING(data), (size_t)w);
        t->seq[e] = ++t->sequence;
        unlink_entry(t, e);
        append_entry(t, e);
        Py_RETURN_FALSE;
    }
    if (t->free_head < 0 && t->used == t->cap && grow_entries(t) < 0)
        return NULL;
    if ((t->count + 1) * 2 > t->table_size) {
        if (rehash(t, t->table_size * 2) < 0)
            return NULL;
        if (find(t, key, hash, &at) == -2)
            return NULL;
    }
    t->latest = expires;
    if (t->free_head >= 0) {
        e = t->free_head;
        t->free_head = t->next[e];
    } else {
        e = (int32_t)t->used++;
    }
    Py_INCREF(key);
    t->keys[e] = key;
    t->hashes[e] = hash;
    t->expires[e] = expires;
    t->seeder[e] = (unsigned char)seeder;
    t->seq[e] = ++t->sequence;
    t->table[at] = e + 1;
    Py_ssize_t n = t->count;
    Py_ssize_t j = (Py_ssize_t)(draw * (double)(n + 1));
    if (j > n)
        j = n;
    if (j < n) { /* the newcomer takes slot j; its occupant moves to the end */
        int32_t moved = t->order[j];
        t->order[n] = moved;
        t->pos[moved] = (int32_t)n;
        memcpy(t->blob + n * w, t->blob + j * w, (size_t)w);
    }
    t->order[j] = e;
    t->pos[e] = (int32_t)j;
    memcpy(t->blob + j * w, PyBytes_AS_STRING(data), (size_t)w);
    t->count = n + 1;
    append_entry(t, e);
    t->seeders += seeder;
    Py_RETURN_TRUE;
}

/* find() for a key already checked: hashes it too (-2 on error). */
static int32_t lookup(PeerTable *t, PyObject *key, size_t *at) {
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return -2;
    return find(t, key, hash, at);
}

static PyObject *PeerTable_remove(PeerTable *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    if (check_key(key) < 0)
        return NULL;
    size_t at;
    int32_t e = lookup(t, key, &at);
    if (e == -2)
        return NULL;
    if (e < 0)
        Py_RETURN_FALSE;
    remove_entry(t, e, at);
    Py_RETURN_TRUE;
}

/* Remove the peers that expired by ``now``: how many, or -1 on error. */
static Py_ssize_t prune_until(PeerTable *t, double now) {
    Py_ssize_t removed = 0;
    while (t->head >= 0 && t->expires[t->head] <= now) {
        int32_t e = t->head;
        size_t at;
        if (find(t, t->keys[e], t->hashes[e], &at) != e) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "peer table index is inconsistent");
            return -1;
        }
        remove_entry(t, e, at);
        removed++;
    }
    return removed;
}

static PyObject *PeerTable_prune(PeerTable *t, PyObject *arg) {
    if (ready(t) < 0)
        return NULL;
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t removed = prune_until(t, now);
    return removed < 0 ? NULL : PyLong_FromSsize_t(removed);
}

static PyObject *entry_tuple(PeerTable *t, int32_t e, int with_seeder) {
    PyObject *data = PyBytes_FromStringAndSize(t->blob + (Py_ssize_t)t->pos[e] * t->width,
                                               t->width);
    if (data == NULL)
        return NULL;
    PyObject *result;
    if (with_seeder)
        result = Py_BuildValue("(ONdNL)", t->keys[e], data, t->expires[e],
                               PyBool_FromLong(t->seeder[e]), t->seq[e]);
    else
        result = Py_BuildValue("(ONd)", t->keys[e], data, t->expires[e]);
    return result;
}

/* ``count`` entries in refresh order from ``first`` on, as (peer_id, data, expires,
   seeder, seq) tuples. */
static PyObject *entry_list(PeerTable *t, int32_t first, Py_ssize_t count) {
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    int32_t e = first;
    for (Py_ssize_t k = 0; k < count && e >= 0; k++, e = t->next[e]) {
        PyObject *item = entry_tuple(t, e, 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, item);
    }
    return list;
}

static PyObject *PeerTable_sample(PeerTable *t, PyObject *const *args, Py_ssize_t nargs) {
    if (ready(t) < 0)
        return NULL;
    /* sample(want, exclude, draw, records) -> (list of (peer_id, data, expires) or None,
       the data concatenated) */
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "sample(want, exclude, draw, records)");
        return NULL;
    }
    Py_ssize_t want = PyLong_AsSsize_t(args[0]);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    double draw = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred() || check_unit(draw) < 0)
        return NULL;
    int records = PyObject_IsTrue(args[3]);
    if (records < 0)
        return NULL;
    if (want < 0)
        want = 0;
    int32_t asker = -1;
    if (args[1] != Py_None) {
        if (check_key(args[1]) < 0)
            return NULL;
        Py_hash_t hash = PyObject_Hash(args[1]);
        if (hash == -1)
            return NULL;
        size_t at;
        asker = find(t, args[1], hash, &at);
        if (asker == -2)
            return NULL;
    }
    Py_ssize_t size = t->count, start, run;
    if (size <= want || (size == want + 1 && asker >= 0)) {
        start = 0;
        run = size;
    } else {
        start = (Py_ssize_t)(draw * (double)size);
        if (start >= size)
            start = size - 1;
        run = want + 1; /* one more, in case the asker is among them */
    }
    Py_ssize_t skip = -1;
    if (asker >= 0 && size > 0) {
        Py_ssize_t offset = ((Py_ssize_t)t->pos[asker] - start + size) % size;
        if (offset < run)
            skip = offset;
    }
    Py_ssize_t taken = run - (skip >= 0);
    if (taken > want)
        taken = want;
    Py_ssize_t w = t->width;
    PyObject *packed = PyBytes_FromStringAndSize(NULL, taken * w);
    PyObject *list = records ? PyList_New(taken) : Py_NewRef(Py_None);
    if (packed == NULL || list == NULL) {
        Py_XDECREF(packed);
        Py_XDECREF(list);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(packed);
    Py_ssize_t got = 0;
    for (Py_ssize_t k = 0; k < run && got < taken; k++) {
        if (k == skip)
            continue;
        Py_ssize_t slot = (start + k) % size;
        memcpy(out + got * w, t->blob + slot * w, (size_t)w);
        if (records) {
            PyObject *item = entry_tuple(t, t->order[slot], 0);
            if (item == NULL) {
                Py_DECREF(packed);
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, got, item);
        }
        got++;
    }
    return Py_BuildValue("(NN)", list, packed);
}

static PyObject *PeerTable_announce(PeerTable *t, PyObject *const *args, Py_ssize_t nargs) {
    /* announce(peer_id, data, seeder, now, draw, want, exclude, draw2, records)
       -> (new, records or None, packed): prune, put, sample in one call (a tracker's
       announce); the arguments as put's and sample's. */
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "announce(peer_id, data, seeder, now, draw, want, exclude, draw2, "
                        "records)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    double now = PyFloat_AsDouble(args[3]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (prune_until(t, now) < 0)
        return NULL;
    PyObject *added = PeerTable_put(t, args, 5);
    if (added == NULL)
        return NULL;
    PyObject *sample = PeerTable_sample(t, args + 5, 4);
    if (sample == NULL) {
        Py_DECREF(added);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(3, added, PyTuple_GET_ITEM(sample, 0),
                                    PyTuple_GET_ITEM(sample, 1));
    Py_DECREF(added);
    Py_DECREF(sample);
    return result;
}

static PyObject *PeerTable_page(PeerTable *t, PyObject *const *args, Py_ssize_t nargs) {
    if (ready(t) < 0)
        return NULL;
    /* page(after, limit) -> [(peer_id, data, expires, seeder, seq)] refreshed after
       sequence ``after``, oldest first, at most ``limit`` */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "page(after, limit)");
        return NULL;
    }
    long long after = PyLong_AsLongLong(args[0]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    int32_t e = t->tail, first = -1;
    Py_ssize_t newer = 0;
    while (e >= 0 && t->seq[e] > after) { /* back to the cookie */
        first = e;
        newer++;
        e = t->prev[e];
    }
    if (limit > newer)
        limit = newer;
    return entry_list(t, first, limit < 0 ? 0 : limit);
}

static PyObject *PeerTable_entries(PeerTable *t, PyObject *unused) {
    if (ready(t) < 0)
        return NULL;
    /* entries() -> [(peer_id, data, expires, seeder, seq)] in refresh order */
    return entry_list(t, t->head, t->count);
}

static PyObject *PeerTable_order(PeerTable *t, PyObject *unused) {
    if (ready(t) < 0)
        return NULL;
    /* order() -> the peer ids in permutation order (for tests) */
    PyObject *list = PyList_New(t->count);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < t->count; k++)
        PyList_SET_ITEM(list, k, Py_NewRef(t->keys[t->order[k]]));
    return list;
}

static PyObject *PeerTable_get(PeerTable *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    /* get(peer_id) -> (peer_id, data, expires, seeder, seq) or None */
    if (check_key(key) < 0)
        return NULL;
    size_t at;
    int32_t e = lookup(t, key, &at);
    if (e == -2)
        return NULL;
    if (e < 0)
        Py_RETURN_NONE;
    return entry_tuple(t, e, 1);
}

static Py_ssize_t PeerTable_len(PeerTable *t) { return t->count; }

static int PeerTable_contains(PeerTable *t, PyObject *key) {
    if (ready(t) < 0)
        return -1;
    if (!PyUnicode_CheckExact(key))
        return 0;
    size_t at;
    int32_t e = lookup(t, key, &at);
    return e == -2 ? -1 : e >= 0;
}

static PyObject *get_seeders(PeerTable *t, void *c) { return PyLong_FromSsize_t(t->seeders); }
static PyObject *get_sequence(PeerTable *t, void *c) { return PyLong_FromLongLong(t->sequence); }
static PyObject *get_width(PeerTable *t, void *c) { return PyLong_FromSsize_t(t->width); }
static PyObject *get_ttl(PeerTable *t, void *c) { return PyFloat_FromDouble(t->ttl); }

static int set_sequence(PeerTable *t, PyObject *value, void *c) {
    long long v = value ? PyLong_AsLongLong(value) : -1;
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < t->sequence) {
        PyErr_SetString(PyExc_ValueError, "sequence only moves forward");
        return -1;
    }
    t->sequence = v;
    return 0;
}

static PyGetSetDef PeerTable_getset[] = {
    {"seeders", (getter)get_seeders, NULL, "live peers with the seeder flag", NULL},
    {"sequence", (getter)get_sequence, (setter)set_sequence, "the last sequence handed out",
     NULL},
    {"width", (getter)get_width, NULL, "bytes of data per peer", NULL},
    {"ttl", (getter)get_ttl, NULL, "seconds every registration lives", NULL},
    {NULL},
};

static PyMethodDef PeerTable_methods[] = {
    {"put", (PyCFunction)(void (*)(void))PeerTable_put, METH_FASTCALL,
     "put(peer_id, data, seeder, now, draw) -> True if new"},
    {"remove", (PyCFunction)PeerTable_remove, METH_O, "remove(peer_id) -> True if it was in"},
    {"prune", (PyCFunction)PeerTable_prune, METH_O, "prune(now) -> peers removed"},
    {"sample", (PyCFunction)(void (*)(void))PeerTable_sample, METH_FASTCALL,
     "sample(want, exclude, draw, records) -> (records or None, packed data)"},
    {"announce", (PyCFunction)(void (*)(void))PeerTable_announce, METH_FASTCALL,
     "announce(peer_id, data, seeder, now, draw, want, exclude, draw2, records) -> "
     "(new, records or None, packed)"},
    {"page", (PyCFunction)(void (*)(void))PeerTable_page, METH_FASTCALL,
     "page(after, limit) -> entries refreshed after sequence ``after``, oldest first"},
    {"entries", (PyCFunction)PeerTable_entries, METH_NOARGS, "entries in refresh order"},
    {"order", (PyCFunction)PeerTable_order, METH_NOARGS, "peer ids in permutation order"},
    {"get", (PyCFunction)PeerTable_get, METH_O, "get(peer_id) -> entry or None"},
    {NULL},
};

static PySequenceMethods PeerTable_as_sequence = {
    .sq_length = (lenfunc)PeerTable_len,
    .sq_contains = (objobjproc)PeerTable_contains,
};

static PyTypeObject PeerTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rendezvous.store._peertable.PeerTable",
    .tp_doc = "One swarm: fixed-width data, one TTL, random samples in O(want).",
    .tp_basicsize = sizeof(PeerTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PeerTable_init,
    .tp_dealloc = (destructor)PeerTable_dealloc,
    .tp_methods = PeerTable_methods,
    .tp_getset = PeerTable_getset,
    .tp_as_sequence = &PeerTable_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rendezvous.store._peertable",
    .m_doc = "Swarms of the memory store in flat C arrays (see _peertable.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__peertable(void) {
    if (PyType_Ready(&PeerTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "PeerTable", (PyObject *)&PeerTableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
