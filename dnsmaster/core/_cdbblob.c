/*
 * Optional accelerator for dnsmaster.core.cdb's packed records: a source's cdb
 * records kept as ONE blob in cdb's record layout (spec 8.3: klen u32le, dlen
 * u32le, key, data, repeated), plus the offsets in the blob where the build's
 * SOA serial goes (4 bytes, big-endian: the first of an SOA's five numbers, 20
 * bytes before the end of its data). A build from a hundred such blobs makes no
 * Python object per record. cdb.py holds the pure-Python reference of each
 * function; tests hold them to the same bytes and the same refusals.
 *
 * pack(keys, values, soa_defaults) -> (blob, serials)
 *
 *   The records keys[i] -> values[i] as one blob; serials are the offsets of the
 *   serials of records soa_defaults (indexes, ascending), as a tuple of ints.
 *
 * scan(blob, serials) -> int
 *
 *   The number of records in blob; ValueError when blob is not whole records or
 *   an offset of serials is not the serial place of a record (ascending, each of
 *   a record whose data has the 20 bytes of SOA numbers). Without the GIL.
 *
 * write(fd, blobs, serials, serial) -> None
 *
 *   Writes to fd the cdb of every record of blobs[0], blobs[1], ... in order,
 *   with the 32-bit serial written big-endian at every offset of serials[i] in
 *   blobs[i]: the bytes of cdb.dumps over the same records. Each blob is checked
 *   as scan does before anything is written; CdbTooLarge past 4 GiB. Everything
 *   after the arguments are taken runs without the GIL: blobs are buffers the
 *   call holds until it returns.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define CDB_HEADER 2048
#define CDB_BUF (1 << 20)
#define CDB_LIMIT ((uint64_t)1 << 32)
#define SOA_NUMBERS 20

static uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
put32(unsigned char *d, uint32_t v)
{
    d[0] = (unsigned char)v;
    d[1] = (unsigned char)(v >> 8);
    d[2] = (unsigned char)(v >> 16);
    d[3] = (unsigned char)(v >> 24);
}

static uint32_t
cdb_hash(const unsigned char *key, uint32_t len)
{
    uint32_t h = 5381; /* 8.2 */
    for (uint32_t j = 0; j < len; j++)
        h = (h * 33) ^ key[j];
    return h;
}

/* One blob and its serial offsets, as the C code sees them. */
typedef struct {
    const unsigned char *p;
    uint64_t n;
    uint64_t *serials;
    Py_ssize_t nserials;
} blob;

typedef struct {
    uint32_t h;
    uint32_t p;
} hp;

/* Reasons a blob is refused; scan raises ValueError with them. */
static const char *const REFUSED[] = {
    NULL,
    "a record runs past the end of the records",
    "a serial offset is not the serial of an SOA record",
};

/* Walk b's records: count them and check the serial offsets against them; with
 * out, also the hash and position (from pos on) of each, appended to out. Returns
 * 0 (count in *count), or the index of the reason in REFUSED. No Python calls. */
static int
walk(const blob *b, uint64_t *count, hp *out, uint64_t pos)
{
    uint64_t at = 0, k = 0;
    Py_ssize_t s = 0;
    while (at < b->n) {
        if (b->n - at < 8)
            return 1;
        uint32_t klen = get32(b->p + at), dlen = get32(b->p + at + 4);
        uint64_t end = at + 8 + (uint64_t)klen + dlen;
        if (end > b->n)
            return 1;
        if (s < b->nserials && b->serials[s] < end) {
            const unsigned char *type = b->p + at + 8 + klen; /* the value's first bytes */
            if (dlen < SOA_NUMBERS || b->serials[s] != end - SOA_NUMBERS || type[0] != 0 ||
                type[1] != 6)
                return 2;
            s++;
        }
        if (out != NULL) {
            out[k].h = cdb_hash(b->p + at + 8, klen);
            out[k].p = (uint32_t)(pos + at);
        }
        k++;
        at = end;
    }
    if (s != b->nserials)
        return 2; /* past the records, or two at one place */
    *count = k;
    return 0;
}

/* serials (a sequence of ints) as a malloc'ed array; NULL with an exception set. */
static uint64_t *
offsets(PyObject *serials, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(serials, "serials must be a sequence of ints");
    if (seq == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *out = PyMem_RawMalloc(((size_t)*n + 1) * sizeof *out);
    if (out == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, REFUSED[2]);
            }
            PyMem_RawFree(out);
            Py_DECREF(seq);
            return NULL;
        }
        out[i] = v;
    }
    Py_DECREF(seq);
    return out;
}

static PyObject *
pack(PyObject *self, PyObject *args)
{
    PyObject *keys, *values, *soa, *ks = NULL, *vs = NULL, *ss = NULL, *blob_obj = NULL;
    PyObject *result = NULL, *where = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:pack", &keys, &values, &soa))
        return NULL;
    ks = PySequence_Fast(keys, "keys must be a sequence");
    vs = ks ? PySequence_Fast(values, "values must be a sequence") : NULL;
    ss = vs ? PySequence_Fast(soa, "soa_defaults must be a sequence") : NULL;
    if (ss == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ks), nsoa = PySequence_Fast_GET_SIZE(ss);
    if (PySequence_Fast_GET_SIZE(vs) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    PyObject **kv = PySequence_Fast_ITEMS(ks), **vv = PySequence_Fast_ITEMS(vs);
    uint64_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(kv[i]) || !PyBytes_Check(vv[i])) {
            PyErr_Format(PyExc_TypeError, "record %zd: keys and values must be bytes", i);
            goto done;
        }
        Py_ssize_t klen = PyBytes_GET_SIZE(kv[i]), vlen = PyBytes_GET_SIZE(vv[i]);
        if ((uint64_t)klen >= CDB_LIMIT || (uint64_t)vlen >= CDB_LIMIT) {
            PyErr_SetString(PyExc_ValueError, "a record of 4 GiB or more");
            goto done;
        }
        size += 8 + (uint64_t)klen + (uint64_t)vlen;
    }
    if (size > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    blob_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    where = PyTuple_New(nsoa);
    if (blob_obj == NULL || where == NULL)
        goto done;
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(blob_obj);
    uint64_t at = 0;
    Py_ssize_t s = 0, next = -1;
    if (nsoa > 0 && (next = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(ss, 0))) == -1 &&
        PyErr_Occurred())
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t klen = PyBytes_GET_SIZE(kv[i]), vlen = PyBytes_GET_SIZE(vv[i]);
        put32(d + at, (uint32_t)klen);
        put32(d + at + 4, (uint32_t)vlen);
        memcpy(d + at + 8, PyBytes_AS_STRING(kv[i]), (size_t)klen);
        memcpy(d + at + 8 + klen, PyBytes_AS_STRING(vv[i]), (size_t)vlen);
        at += 8 + (uint64_t)klen + (uint64_t)vlen;
        if (i == next) {
            if (vlen < SOA_NUMBERS) {
                PyErr_Format(PyExc_ValueError, "record %zd: too short for an SOA serial", i);
                goto done;
            }
            PyObject *o = PyLong_FromUnsignedLongLong(at - SOA_NUMBERS);
            if (o == NULL)
                goto done;
            PyTuple_SET_ITEM(where, s, o);
            s++;
            next = -1;
            if (s < nsoa && (next = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(ss, s))) == -1 &&
                PyErr_Occurred())
                goto done;
            if (s < nsoa && next <= i) {
                PyErr_SetString(PyExc_ValueError, "soa_defaults must be ascending");
                goto done;
            }
        }
    }
    if (s != nsoa) {
        PyErr_SetString(PyExc_ValueError, "an index of soa_defaults past the records");
        goto done;
    }
    result = PyTuple_Pack(2, blob_obj, where);
done:
    Py_XDECREF(blob_obj);
    Py_XDECREF(where);
    Py_XDECREF(ks);
    Py_XDECREF(vs);
    Py_XDECREF(ss);
    return result;
}

static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *serials;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O:scan", &view, &serials))
        return NULL;
    blob b = {view.buf, (uint64_t)view.len, NULL, 0};
    b.serials = offsets(serials, &b.nserials);
    if (b.serials == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint64_t count = 0;
    int refused;
    Py_BEGIN_ALLOW_THREADS
    refused = walk(&b, &count, NULL, 0);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(b.serials);
    PyBuffer_Release(&view);
    if (refused) {
        PyErr_SetString(PyExc_ValueError, REFUSED[refused]);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(count);
}

/* ---- write: cdb_make's layout (spec 8), from blobs ---- */

typedef struct {
    int fd;
    unsigned char *buf;
    size_t used;
    int err; /* errno of a failed write; -1: a signal handler raised */
} out;

/* The buffer to the fd. Runs without the GIL; takes it only to run the signal
 * handlers when a signal cut a write short or interrupted it (PEP 475). */
static int
flush(out *w)
{
    const unsigned char *p = w->buf;
    size_t n = w->used;
    while (n > 0) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0) {
            if (errno != EINTR) {
                w->err = errno;
                return -1;
            }
            k = 0;
        }
        if ((size_t)k < n) {
            PyGILState_STATE g = PyGILState_Ensure();
            int rc = PyErr_CheckSignals();
            PyGILState_Release(g);
            if (rc < 0) {
                w->err = -1;
                return -1;
            }
        }
        p += k;
        n -= (size_t)k;
    }
    w->used = 0;
    return 0;
}

static int
put(out *w, const void *src, size_t n)
{
    const unsigned char *p = src;
    while (n > 0) {
        if (w->used == CDB_BUF && flush(w) < 0)
            return -1;
        size_t m = CDB_BUF - w->used;
        if (m > n)
            m = n;
        memcpy(w->buf + w->used, p, m);
        w->used += m;
        p += m;
        n -= m;
    }
    return 0;
}

/* A blob's records with the serial at each of its offsets. */
static int
put_blob(out *w, const blob *b, const unsigned char *serial)
{
    uint64_t at = 0;
    for (Py_ssize_t s = 0; s < b->nserials; s++) {
        if (put(w, b->p + at, (size_t)(b->serials[s] - at)) < 0 || put(w, serial, 4) < 0)
            return -1;
        at = b->serials[s] + 4;
    }
    return put(w, b->p + at, (size_t)(b->n - at));
}

/* Each table, its records in insertion order at (h >> 8) % slots, probing on (8.3).
 * split holds the records grouped by table, in order. */
static int
put_tables(out *w, const hp *split, const uint32_t *count, uint32_t most)
{
    hp *slots = PyMem_RawMalloc(((size_t)most * 2 + 1) * sizeof *slots);
    if (slots == NULL) {
        w->err = ENOMEM;
        return -1;
    }
    const hp *e = split;
    for (int t = 0; t < 256; t++) {
        uint32_t len = 2 * count[t];
        if (!len)
            continue;
        memset(slots, 0, len * sizeof *slots);
        for (uint32_t j = 0; j < count[t]; j++, e++) {
            uint32_t s = (e->h >> 8) % len;
            while (slots[s].p) /* records start at 2048 or later: 0 is free */
                if (++s == len)
                    s = 0;
            slots[s] = *e;
        }
        for (uint32_t s = 0; s < len; s++) {
            if (w->used + 8 > CDB_BUF && flush(w) < 0) {
                PyMem_RawFree(slots);
                return -1;
            }
            put32(w->buf + w->used, slots[s].h);
            put32(w->buf + w->used + 4, slots[s].p);
            w->used += 8;
        }
    }
    PyMem_RawFree(slots);
    return flush(w);
}

static void
too_large(void)
{
    PyObject *mod = PyImport_ImportModule("dnsmaster.core.cdb");
    if (mod == NULL)
        return;
    PyObject *cls = PyObject_GetAttrString(mod, "CdbTooLarge");
    Py_DECREF(mod);
    if (cls == NULL)
        return;
    PyObject *doc = PyObject_GetAttrString(cls, "__doc__");
    if (doc != NULL) {
        PyErr_SetObject(cls, doc);
        Py_DECREF(doc);
    }
    Py_DECREF(cls);
}

/* Without the GIL: check and hash every blob, then write header, records, tables.
 * 0; or the index of a reason in REFUSED; or -1 with w->err set; or -2: too large. */
static int
write_all(out *w, const blob *bs, Py_ssize_t nb, uint32_t serial)
{
    unsigned char header[CDB_HEADER], stamp[4];
    uint32_t count[256], start[256], most = 0;
    uint64_t pos = CDB_HEADER, n = 0;
    for (Py_ssize_t i = 0; i < nb; i++)
        pos += bs[i].n;
    if (pos >= CDB_LIMIT)
        return -2;
    /* each record is at least 8 bytes: a bound for the table of hashes */
    size_t most_records = (size_t)((pos - CDB_HEADER) / 8 + 1);
    hp *all = PyMem_RawMalloc(most_records * sizeof *all);
    hp *split = PyMem_RawMalloc(most_records * sizeof *split);
    int rc = -1;
    if (all == NULL || split == NULL) {
        w->err = ENOMEM;
        goto done;
    }
    pos = CDB_HEADER;
    for (Py_ssize_t i = 0; i < nb; i++) {
        uint64_t k = 0;
        rc = walk(&bs[i], &k, all + n, pos);
        if (rc)
            goto done;
        n += k;
        pos += bs[i].n;
    }
    rc = -2;
    /* cdb.dumps refuses as soon as a position reaches 4 GiB: positions only grow,
     * so that is when the records and 16 bytes of table slots per record do */
    if (pos + 16 * n >= CDB_LIMIT)
        goto done;
    rc = -1;
    /* 8.3: the tables follow the records, one after another; the header holds each
     * one's position and slot count (twice its records), empty ones included. */
    memset(count, 0, sizeof count);
    for (uint64_t k = 0; k < n; k++)
        count[all[k].h & 255]++;
    uint32_t tpos = (uint32_t)pos, u = 0;
    for (int t = 0; t < 256; t++) {
        if (count[t] > most)
            most = count[t];
        put32(header + 8 * t, tpos);
        put32(header + 8 * t + 4, 2 * count[t]);
        tpos += 16 * count[t];
        start[t] = u;
        u += count[t];
    }
    for (uint64_t k = 0; k < n; k++)
        split[start[all[k].h & 255]++] = all[k];
    stamp[0] = (unsigned char)(serial >> 24); /* big-endian, as in the SOA record */
    stamp[1] = (unsigned char)(serial >> 16);
    stamp[2] = (unsigned char)(serial >> 8);
    stamp[3] = (unsigned char)serial;
    if (put(w, header, CDB_HEADER) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < nb; i++)
        if (put_blob(w, &bs[i], stamp) < 0)
            goto done;
    rc = put_tables(w, split, count, most);
done:
    PyMem_RawFree(all);
    PyMem_RawFree(split);
    return rc;
}

static PyObject *
write_cdb(PyObject *self, PyObject *args)
{
    int fd;
    unsigned long serial;
    PyObject *blobs, *serials, *bseq = NULL, *sseq = NULL, *result = NULL;
    Py_buffer *views = NULL;
    blob *bs = NULL;
    Py_ssize_t nb = 0, got = 0;
    out w = {0, NULL, 0, 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iOOk:write", &fd, &blobs, &serials, &serial))
        return NULL;
    bseq = PySequence_Fast(blobs, "blobs must be a sequence");
    sseq = bseq ? PySequence_Fast(serials, "serials must be a sequence") : NULL;
    if (sseq == NULL)
        goto done;
    nb = PySequence_Fast_GET_SIZE(bseq);
    if (PySequence_Fast_GET_SIZE(sseq) != nb) {
        PyErr_SetString(PyExc_ValueError, "blobs and serials differ in length");
        goto done;
    }
    views = PyMem_Calloc((size_t)nb + 1, sizeof *views);
    bs = PyMem_Calloc((size_t)nb + 1, sizeof *bs);
    w.buf = PyMem_RawMalloc(CDB_BUF);
    if (views == NULL || bs == NULL || w.buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < nb; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bseq, got), &views[got],
                               PyBUF_SIMPLE) < 0)
            goto done;
        bs[got].p = views[got].buf;
        bs[got].n = (uint64_t)views[got].len;
        bs[got].serials = offsets(PySequence_Fast_GET_ITEM(sseq, got), &bs[got].nserials);
        if (bs[got].serials == NULL) {
            PyBuffer_Release(&views[got]);
            goto done;
        }
    }
    w.fd = fd;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = write_all(&w, bs, nb, (uint32_t)(serial & 0xFFFFFFFFul));
    Py_END_ALLOW_THREADS
    if (rc > 0)
        PyErr_SetString(PyExc_ValueError, REFUSED[rc]);
    else if (rc == -2)
        too_large();
    else if (rc == -1 && w.err > 0) {
        errno = w.err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    else if (rc == 0)
        result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
        PyMem_RawFree(bs[i].serials);
    }
    PyMem_Free(views);
    PyMem_Free(bs);
    PyMem_RawFree(w.buf);
    Py_XDECREF(bseq);
    Py_XDECREF(sseq);
    return result;
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_VARARGS,
     "pack(keys, values, soa_defaults) -> (blob, serials)\n\n"
     "The records as one blob in cdb's record layout, and the offsets in it of\n"
     "the serials of the SOA records at indexes soa_defaults."},
    {"scan", scan, METH_VARARGS,
     "scan(blob, serials) -> int\n\n"
     "The number of records in blob; ValueError if it is not whole records or an\n"
     "offset of serials is not the serial of an SOA record."},
    {"write", write_cdb, METH_VARARGS,
     "write(fd, blobs, serials, serial) -> None\n\n"
     "Write to fd the cdb of the records of every blob, in order, with serial at\n"
     "the offsets serials[i] of blobs[i]; all of it without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnsmaster.core._cdbblob",
    "C fast path of dnsmaster.core.cdb's packed records (optional).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC
PyInit__cdbblob(void)
{
    return PyModule_Create(&module);
}
