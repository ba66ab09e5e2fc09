/* torch.save checkpoints without Python (torch_pickle.h): the zip's data.pkl run on a pickle machine that knows
 * the opcodes torch.save (protocol 2) and Python 3's pickle (up to protocol 5's framing) emit for plain data and
 * tensors, and builds objects instead of calling anything. */
#include "model/torch_pickle.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/zipread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    PK_NONE,
    PK_BOOL,
    PK_INT,
    PK_FLOAT,
    PK_STR,   /* s, and bytes as well */
    PK_TUPLE, /* v[0..n) */
    PK_LIST,
    PK_DICT,    /* v[2j] = key, v[2j + 1] = value */
    PK_GLOBAL,  /* s = "module.name" */
    PK_STORAGE, /* s = key, dtype */
    PK_TENSOR,
    PK_OBJ, /* anything else: opaque */
    PK_MARK
} pk_kind;

#define PK_MAX_DIMS SAFETENSORS_MAX_DIMS

typedef struct pk pk;
struct pk {
    pk_kind k;
    int64_t i;
    double f;
    char *s;
    pk **v;
    int n, cap;
    char dtype[16]; /* STORAGE: the element type's safetensors name (F32, BF16, I64, ...) */
    pk *storage;    /* TENSOR */
    pk *args;       /* OBJ made by a call (REDUCE, NEWOBJ): s = the callable's name, args = its arguments */
    int64_t offset;
    int ndim;
    int64_t shape[PK_MAX_DIMS], stride[PK_MAX_DIMS];
};

typedef struct {
    const uint8_t *p, *end, *start;
    const char *path;
    pk **all; /* every object made, freed together */
    int n_all, cap_all;
    pk **stack;
    int sp, scap;
    pk **memo;
    int64_t nmemo, memo_count; /* memo's slots; how many are set (MEMOIZE's next index, as Python's len(memo)) */
} pk_vm;

static pk *pk_new(pk_vm *m, pk_kind k) {
    pk *o = zg_calloc(1, sizeof *o);
    o->k = k;
    if (m->n_all == m->cap_all) {
        m->cap_all = m->cap_all ? 2 * m->cap_all : 256;
        m->all = zg_realloc(m->all, (size_t)m->cap_all * sizeof *m->all);
    }
    m->all[m->n_all++] = o;
    return o;
}

static void pk_append(pk *o, pk *x) {
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 8;
        o->v = zg_realloc(o->v, (size_t)o->cap * sizeof *o->v);
    }
    o->v[o->n++] = x;
}

static void pk_push(pk_vm *m, pk *o) {
    if (m->sp == m->scap) {
        m->scap = m->scap ? 2 * m->scap : 64;
        m->stack = zg_realloc(m->stack, (size_t)m->scap * sizeof *m->stack);
    }
    m->stack[m->sp++] = o;
}

static void pk_vm_free(pk_vm *m) {
    for (int i = 0; i < m->n_all; i++) {
        free(m->all[i]->s);
        free(m->all[i]->v);
        free(m->all[i]);
    }
    free(m->all);
    free(m->stack);
    free(m->memo);
}

static int pk_err(pk_vm *m, const char *what) {
    return zg_errorf("%s: the checkpoint's pickle is not one zgpt can read (%s at byte %ld of data.pkl)", m->path, what,
                     (long)(m->p - m->start));
}

/* the value at memo index i (set by PUT opcodes) */
static int memo_put(pk_vm *m, int64_t i) {
    if (m->sp == 0 || i < 0 || i > (1 << 22)) return pk_err(m, "a memo index out of range");
    if (i >= m->nmemo) {
        int64_t n = m->nmemo ? m->nmemo : 256;
        while (n <= i) n *= 2;
        m->memo = zg_realloc(m->memo, (size_t)n * sizeof *m->memo);
        memset(m->memo + m->nmemo, 0, (size_t)(n - m->nmemo) * sizeof *m->memo);
        m->nmemo = n;
    }
    if (m->memo[i] == NULL) m->memo_count++;
    m->memo[i] = m->stack[m->sp - 1];
    return 0;
}

/* the objects above the topmost mark, popped with it, into a new object of kind k */
static pk *pop_mark(pk_vm *m, pk_kind k) {
    int j = m->sp - 1;
    while (j >= 0 && m->stack[j]->k != PK_MARK) j--;
    if (j < 0) return NULL;
    pk *o = pk_new(m, k);
    for (int i = j + 1; i < m->sp; i++) pk_append(o, m->stack[i]);
    m->sp = j;
    return o;
}

/* torch's storage classes (the pickled storage type) -> the safetensors name of the element type */
static const char *storage_dtype(const char *global) {
    static const struct {
        const char *cls, *dt;
    } tab[] = {{"torch.FloatStorage", "F32"},  {"torch.HalfStorage", "F16"}, {"torch.BFloat16Storage", "BF16"},
               {"torch.DoubleStorage", "F64"}, {"torch.LongStorage", "I64"}, {"torch.IntStorage", "I32"},
               {"torch.ShortStorage", "I16"},  {"torch.CharStorage", "I8"},  {"torch.ByteStorage", "U8"},
               {"torch.BoolStorage", "BOOL"}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(global, tab[i].cls) == 0) return tab[i].dt;
    return NULL;
}

static int int_tuple(const pk *t, int64_t *out, int *n) {
    if (t->k != PK_TUPLE || t->n > PK_MAX_DIMS) return -1;
    for (int i = 0; i < t->n; i++) {
        if (t->v[i]->k != PK_INT) return -1;
        out[i] = t->v[i]->i;
    }
    *n = t->n;
    return 0;
}

/* An object zgpt does not build: the callable's name and its arguments kept (an IntEnum member is its class
 * called with its value, as DeepSpeed's zero_stage pickles) */
static pk *pk_opaque(pk_vm *m, const pk *fn, pk *args) {
    pk *o = pk_new(m, PK_OBJ);
    o->s = zg_strdup(fn->k == PK_GLOBAL ? fn->s : "");
    o->args = args;
    return o;
}

/* callable(args): tensors, parameters (their data) and OrderedDicts are made; anything else is opaque. depth:
 * _rebuild_from_type_v2 calls the function it is given, at most a few levels deep in a real file */
static pk *pk_call(pk_vm *m, pk *fn, pk *args, int depth) {
    const char *g = fn->k == PK_GLOBAL ? fn->s : "";
    if (args->k != PK_TUPLE) return pk_opaque(m, fn, NULL);
    if ((strcmp(g, "torch._utils._rebuild_tensor_v2") == 0 || strcmp(g, "torch._utils._rebuild_tensor") == 0) &&
        args->n >= 4 && args->v[0]->k == PK_STORAGE && args->v[1]->k == PK_INT) {
        pk *t = pk_new(m, PK_TENSOR);
        int ns = 0;
        t->storage = args->v[0];
        t->offset = args->v[1]->i;
        if (int_tuple(args->v[2], t->shape, &t->ndim) != 0 || int_tuple(args->v[3], t->stride, &ns) != 0 ||
            ns != t->ndim)
            return pk_new(m, PK_OBJ);
        return t;
    }
    if (strncmp(g, "torch._utils._rebuild_parameter", 31) == 0 && args->n >= 1) return args->v[0];
    if (strcmp(g, "torch._tensor._rebuild_from_type_v2") == 0 && args->n >= 3 && depth < 4)
        return pk_call(m, args->v[0], args->v[2], depth + 1);
    if (strcmp(g, "collections.OrderedDict") == 0) return pk_new(m, PK_DICT);
    /* torch.Size((d0, d1, ...)): the shape's tuple (DeepSpeed's param_shapes) */
    if (strcmp(g, "torch.Size") == 0 && args->n == 1 && args->v[0]->k == PK_TUPLE) return args->v[0];
    return pk_opaque(m, fn, args);
}

#define NEED(k)                                                                                                        \
    do {                                                                                                               \
        if (m->end - m->p < (k)) return pk_err(m, "a truncated opcode");                                               \
    } while (0)
#define POP(x)                                                                                                         \
    do {                                                                                                               \
        if (m->sp == 0) return pk_err(m, "an empty stack");                                                            \
        (x) = m->stack[--m->sp];                                                                                       \
    } while (0)

static int pk_string(pk_vm *m, size_t n) {
    if ((size_t)(m->end - m->p) < n) return pk_err(m, "a truncated string");
    pk *o = pk_new(m, PK_STR);
    o->s = zg_malloc(n + 1);
    memcpy(o->s, m->p, n);
    o->s[n] = '\0';
    o->i = (int64_t)n;
    m->p += n;
    pk_push(m, o);
    return 0;
}

/* Runs data.pkl; *out the object STOP leaves. */
static int pk_run(pk_vm *m, pk **out) {
    while (m->p < m->end) {
        uint8_t op = *m->p++;
        pk *a, *b, *c;
        switch (op) {
        case 0x80:
            NEED(1);
            m->p++;
            break; /* PROTO */
        case 0x95:
            NEED(8);
            m->p += 8;
            break; /* FRAME */
        case 0x94:
            if (memo_put(m, m->memo_count) != 0) return -1;
            break; /* MEMOIZE: index len(memo) */
        case '(': pk_push(m, pk_new(m, PK_MARK)); break;
        case '.': POP(*out); return 0; /* STOP */
        case 'N': pk_push(m, pk_new(m, PK_NONE)); break;
        case 0x88:
        case 0x89: a = pk_new(m, PK_BOOL), a->i = op == 0x88, pk_push(m, a); break;
        case 'J':
            NEED(4);
            a = pk_new(m, PK_INT), a->i = (int32_t)zg_load_le(m->p, 4), m->p += 4, pk_push(m, a);
            break;
        case 'K':
            NEED(1);
            a = pk_new(m, PK_INT), a->i = m->p[0], m->p += 1, pk_push(m, a);
            break;
        case 'M':
            NEED(2);
            a = pk_new(m, PK_INT), a->i = (int64_t)zg_load_le(m->p, 2), m->p += 2, pk_push(m, a);
            break;
        case 0x8a: { /* LONG1: n little-endian two's complement bytes */
            NEED(1);
            int n = *m->p++;
            NEED(n);
            if (n > 8) return pk_err(m, "an integer wider than 64 bits");
            uint64_t v = zg_load_le(m->p, n);
            if (n > 0 && n < 8 && (m->p[n - 1] & 0x80)) v |= ~0ull << (8 * n);
            a = pk_new(m, PK_INT), a->i = (int64_t)v, m->p += n, pk_push(m, a);
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            NEED(8);
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) v = (v << 8) | m->p[i];
            a = pk_new(m, PK_FLOAT);
            memcpy(&a->f, &v, 8);
            m->p += 8, pk_push(m, a);
            break;
        }
        case 'X':
        case 'B':
            NEED(4);
            {
                size_t n = (size_t)zg_load_le(m->p, 4);
                m->p += 4;
                if (pk_string(m, n)) return -1;
            }
            break;
        case 0x8c:
        case 'C':
            NEED(1);
            {
                size_t n = *m->p++;
                if (pk_string(m, n)) return -1;
            }
            break;
        case 0x8d:
        case 0x8e:
            NEED(8);
            {
                size_t n = (size_t)zg_load_le(m->p, 8);
                m->p += 8;
                if (pk_string(m, n)) return -1;
            }
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(m->p, '\n', (size_t)(m->end - m->p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(m->end - nl1 - 1)) : NULL;
            if (!nl2) return pk_err(m, "a truncated GLOBAL");
            a = pk_new(m, PK_GLOBAL);
            size_t l1 = (size_t)(nl1 - m->p), l2 = (size_t)(nl2 - nl1 - 1);
            a->s = zg_malloc(l1 + l2 + 2);
            memcpy(a->s, m->p, l1);
            a->s[l1] = '.';
            memcpy(a->s + l1 + 1, nl1 + 1, l2);
            a->s[l1 + 1 + l2] = '\0';
            m->p = nl2 + 1;
            pk_push(m, a);
            break;
        }
        case 0x93: /* STACK_GLOBAL: module, name strings */
            POP(b);
            POP(a);
            if (a->k != PK_STR || b->k != PK_STR) return pk_err(m, "STACK_GLOBAL without two strings");
            c = pk_new(m, PK_GLOBAL);
            c->s = zg_malloc(strlen(a->s) + strlen(b->s) + 2);
            sprintf(c->s, "%s.%s", a->s, b->s);
            pk_push(m, c);
            break;
        case ')': pk_push(m, pk_new(m, PK_TUPLE)); break;
        case 't':
            if (!(a = pop_mark(m, PK_TUPLE))) return pk_err(m, "TUPLE without a mark");
            pk_push(m, a);
            break;
        case 0x85:
        case 0x86:
        case 0x87: {
            int n = op - 0x84;
            if (m->sp < n) return pk_err(m, "a short stack");
            a = pk_new(m, PK_TUPLE);
            for (int i = m->sp - n; i < m->sp; i++) pk_append(a, m->stack[i]);
            m->sp -= n;
            pk_push(m, a);
            break;
        }
        case ']': pk_push(m, pk_new(m, PK_LIST)); break;
        case 'l':
            if (!(a = pop_mark(m, PK_LIST))) return pk_err(m, "LIST without a mark");
            pk_push(m, a);
            break;
        case '}': pk_push(m, pk_new(m, PK_DICT)); break;
        case 'd':
            if (!(a = pop_mark(m, PK_DICT))) return pk_err(m, "DICT without a mark");
            pk_push(m, a);
            break;
        case 'a':
            POP(b);
            if (m->sp == 0) return pk_err(m, "APPEND on an empty stack");
            pk_append(m->stack[m->sp - 1], b);
            break;
        case 'e':
        case 'u': { /* APPENDS, SETITEMS: the items above the mark into the object below it */
            if (!(b = pop_mark(m, PK_TUPLE))) return pk_err(m, "APPENDS/SETITEMS without a mark");
            if (m->sp == 0 || (op == 'u' && b->n % 2)) return pk_err(m, "APPENDS/SETITEMS on nothing");
            a = m->stack[m->sp - 1];
            for (int i = 0; i < b->n; i++) pk_append(a, b->v[i]);
            break;
        }
        case 's':
            POP(c);
            POP(b);
            if (m->sp == 0) return pk_err(m, "SETITEM on an empty stack");
            pk_append(m->stack[m->sp - 1], b), pk_append(m->stack[m->sp - 1], c);
            break;
        case 'q':
            NEED(1);
            if (memo_put(m, m->p[0])) return -1;
            m->p += 1;
            break;
        case 'r':
            NEED(4);
            if (memo_put(m, (int64_t)zg_load_le(m->p, 4))) return -1;
            m->p += 4;
            break;
        case 'h':
        case 'j': {
            int w = op == 'h' ? 1 : 4;
            NEED(w);
            int64_t i = (int64_t)zg_load_le(m->p, w);
            m->p += w;
            if (i >= m->nmemo || m->memo[i] == NULL) return pk_err(m, "a GET of an unset memo entry");
            pk_push(m, m->memo[i]);
            break;
        }
        case 'Q': { /* BINPERSID: ('storage', storage type, key, location, numel) */
            POP(a);
            const char *dt = NULL;
            if (a->k == PK_TUPLE && a->n >= 5 && a->v[0]->k == PK_STR && strcmp(a->v[0]->s, "storage") == 0 &&
                a->v[1]->k == PK_GLOBAL && a->v[2]->k == PK_STR)
                dt = storage_dtype(a->v[1]->s);
            if (dt == NULL) return pk_err(m, "a persistent id that is not a torch storage of a known type");
            b = pk_new(m, PK_STORAGE);
            b->s = zg_strdup(a->v[2]->s);
            snprintf(b->dtype, sizeof b->dtype, "%s", dt);
            pk_push(m, b);
            break;
        }
        case 'R':
            POP(b);
            POP(a);
            pk_push(m, pk_call(m, a, b, 0));
            break; /* REDUCE */
        case 0x81:
            POP(b);
            POP(a);
            pk_push(m, pk_opaque(m, a, b->k == PK_TUPLE ? b : NULL));
            break; /* NEWOBJ: cls.__new__(cls, *args) */
        case 0x92:
            POP(c);
            POP(b);
            POP(a);
            pk_push(m, pk_opaque(m, a, b->k == PK_TUPLE ? b : NULL));
            break;                                        /* NEWOBJ_EX: cls, args, kwargs */
        case 0x8f: pk_push(m, pk_new(m, PK_LIST)); break; /* EMPTY_SET: kept as a list */
        case 0x90:                                        /* ADDITEMS: the items above the mark into the set below */
            if (!(b = pop_mark(m, PK_TUPLE))) return pk_err(m, "ADDITEMS without a mark");
            if (m->sp == 0) return pk_err(m, "ADDITEMS on nothing");
            for (int i = 0; i < b->n; i++) pk_append(m->stack[m->sp - 1], b->v[i]);
            break;
        case 0x91: /* FROZENSET */
            if (!(a = pop_mark(m, PK_LIST))) return pk_err(m, "FROZENSET without a mark");
            pk_push(m, a);
            break;
        case 'b':
            POP(b);
            if (m->sp == 0) return pk_err(m, "BUILD on an empty stack");
            break;               /* state ignored */
        case '0': POP(a); break; /* POP */
        case '2':
            if (m->sp == 0) return pk_err(m, "DUP on an empty stack");
            pk_push(m, m->stack[m->sp - 1]);
            break;
        case '1':
            if (!pop_mark(m, PK_TUPLE)) return pk_err(m, "POP_MARK without a mark");
            break;
        default: {
            char what[64];
            m->p--;
            snprintf(what, sizeof what, "opcode 0x%02x", op);
            return pk_err(m, what);
        }
        }
    }
    return pk_err(m, "no STOP");
}

static int dtype_size(const char *dt) {
    if (strcmp(dt, "F64") == 0 || strcmp(dt, "I64") == 0) return 8;
    if (strcmp(dt, "F32") == 0 || strcmp(dt, "I32") == 0) return 4;
    if (strcmp(dt, "F16") == 0 || strcmp(dt, "BF16") == 0 || strcmp(dt, "I16") == 0) return 2;
    return 1;
}

/* ---- a file and its objects --------------------------------------------------------------------------------- */

struct torch_file {
    char *path;
    zg_mmap map;
    zg_zip zip;
    pk_vm vm;
    pk *root;
    char prefix[512]; /* the records' folder in the archive ("archive/") */
};

void torch_file_close(torch_file *tf) {
    if (tf == NULL) return;
    pk_vm_free(&tf->vm);
    zg_zip_free(&tf->zip);
    if (tf->map.data) zg_mmap_close(&tf->map);
    free(tf->path);
    free(tf);
}

int torch_file_is_zip(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[4] = {0};
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;
}

int torch_file_open(torch_file **out, const char *path) {
    *out = NULL;
    if (!torch_file_is_zip(path)) {
        if (!zg_file_exists(path)) return zg_errorf("%s: no such file", path);
        return zg_errorf("%s: not a torch.save zip archive (the legacy format of PyTorch < 1.6, or not a checkpoint): "
                         "load it in PyTorch and save it again with torch.save, or as safetensors",
                         path);
    }
    torch_file *tf = zg_calloc(1, sizeof *tf);
    tf->path = zg_strdup(path);
    int rc = zg_mmap_open(&tf->map, path);
    if (rc == 0) rc = zg_zip_index(&tf->zip, tf->map.data, tf->map.size, path);
    /* <prefix>/data.pkl, and the storages <prefix>/data/<key> */
    const zg_zip_entry *pkl = NULL;
    for (int i = 0; rc == 0 && i < tf->zip.n && !pkl; i++) {
        size_t n = strlen(tf->zip.entries[i].name);
        if (n >= 8 && strcmp(tf->zip.entries[i].name + n - 8, "data.pkl") == 0 &&
            (n == 8 || tf->zip.entries[i].name[n - 9] == '/'))
            pkl = &tf->zip.entries[i];
    }
    if (rc == 0 && (pkl == NULL || pkl->data == NULL))
        rc = pkl ? zg_errorf("%s: its records are compressed (zip method %d): torch.save stores them as they are; "
                             "load it in PyTorch and save it again with torch.save",
                             path, pkl->method)
                 : zg_errorf("%s: a zip archive without a data.pkl: not a torch.save checkpoint", path);
    if (rc == 0) {
        snprintf(tf->prefix, sizeof tf->prefix, "%.*s", (int)(strlen(pkl->name) - 8), pkl->name);
        tf->vm.p = tf->vm.start = pkl->data;
        tf->vm.end = pkl->data + pkl->size;
        tf->vm.path = tf->path;
        rc = pk_run(&tf->vm, &tf->root);
    }
    if (rc != 0) {
        torch_file_close(tf);
        return -1;
    }
    *out = tf;
    return 0;
}

const torch_obj *torch_file_root(const torch_file *tf) { return tf->root; }

const torch_obj *torch_obj_get(const torch_obj *d, const char *key) {
    if (d == NULL || d->k != PK_DICT) return NULL;
    for (int j = 0; j + 1 < d->n; j += 2)
        if (d->v[j]->k == PK_STR && strcmp(d->v[j]->s, key) == 0) return d->v[j + 1];
    return NULL;
}

int torch_obj_count(const torch_obj *o) {
    if (o == NULL) return -1;
    if (o->k == PK_LIST || o->k == PK_TUPLE) return o->n;
    if (o->k == PK_DICT) return o->n / 2;
    return -1;
}

const torch_obj *torch_obj_item(const torch_obj *o, int i) {
    if (o == NULL || (o->k != PK_LIST && o->k != PK_TUPLE) || i < 0 || i >= o->n) return NULL;
    return o->v[i];
}

const char *torch_obj_dict_key(const torch_obj *o, int i) {
    if (o == NULL || o->k != PK_DICT || i < 0 || 2 * i + 1 >= o->n || o->v[2 * i]->k != PK_STR) return NULL;
    return o->v[2 * i]->s;
}

const torch_obj *torch_obj_dict_value(const torch_obj *o, int i) {
    if (o == NULL || o->k != PK_DICT || i < 0 || 2 * i + 1 >= o->n) return NULL;
    return o->v[2 * i + 1];
}

int torch_obj_is_none(const torch_obj *o) { return o == NULL || o->k == PK_NONE; }

int torch_obj_is_tensor(const torch_obj *o) { return o != NULL && o->k == PK_TENSOR; }

int torch_obj_int(const torch_obj *o, int64_t *out) {
    if (o != NULL && o->k == PK_OBJ && o->args != NULL && o->args->n == 1) o = o->args->v[0]; /* an IntEnum */
    if (o == NULL || (o->k != PK_INT && o->k != PK_BOOL)) return -1;
    *out = o->i;
    return 0;
}

int torch_obj_shape(const torch_obj *o, int64_t *shape, int *ndim) {
    return o != NULL && int_tuple(o, shape, ndim) == 0 ? 0 : -1;
}

int torch_obj_tensor(const torch_file *tf, const torch_obj *t, const char *name, safetensors_tensor *x) {
    memset(x, 0, sizeof *x);
    if (t == NULL || t->k != PK_TENSOR) return zg_errorf("%s: '%s' is not a tensor", tf->path, name);
    char ename[1024];
    snprintf(ename, sizeof ename, "%sdata/%s", tf->prefix, t->storage->s);
    const zg_zip_entry *st = zg_zip_find(&tf->zip, ename);
    int es = dtype_size(t->storage->dtype);
    size_t numel = 1;
    int contiguous = 1;
    int sane = t->offset >= 0 && st != NULL;
    for (int d = t->ndim - 1; d >= 0 && sane; d--) {
        /* more elements than the record has bytes is corrupt (and would overflow the product) */
        if (t->shape[d] < 0 || (numel > 0 && (uint64_t)t->shape[d] > st->size / numel)) {
            sane = 0;
            break;
        }
        if (t->shape[d] > 1 && (uint64_t)t->stride[d] != numel) contiguous = 0; /* row-major: the inner count */
        numel *= (size_t)t->shape[d];
    }
    if (st == NULL || st->data == NULL)
        return zg_errorf("%s: tensor '%s': its storage record '%s' is %s", tf->path, name, ename,
                         st ? "compressed" : "missing");
    if (!sane) return zg_errorf("%s: tensor '%s' lies outside its storage: the file is corrupt", tf->path, name);
    if (!contiguous)
        return zg_errorf("%s: tensor '%s' is not contiguous (a view saved with its strides): save "
                         "{k: v.contiguous() for k, v in state_dict.items()} instead",
                         tf->path, name);
    if ((uint64_t)t->offset > st->size || ((uint64_t)t->offset + numel) * (uint64_t)es > st->size)
        return zg_errorf("%s: tensor '%s' lies outside its storage: the file is corrupt", tf->path, name);
    x->name = zg_strdup(name);
    snprintf(x->dtype_name, sizeof x->dtype_name, "%s", t->storage->dtype);
    x->supported = 1;
    if (strcmp(t->storage->dtype, "F32") == 0)
        x->dtype = ZG_F32;
    else if (strcmp(t->storage->dtype, "F16") == 0)
        x->dtype = ZG_F16;
    else if (strcmp(t->storage->dtype, "BF16") == 0)
        x->dtype = ZG_BF16;
    else
        x->supported = 0;
    x->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) x->shape[d] = t->shape[d];
    x->numel = numel;
    x->data = st->data + (size_t)t->offset * (size_t)es;
    x->nbytes = numel * (size_t)es;
    return 0;
}

/* ---- the state dict ------------------------------------------------------------------------------------------ */

/* a dict with at least one tensor value and only tensors (or None) as values */
static int is_state_dict(const pk *d) {
    if (d == NULL || d->k != PK_DICT || d->n == 0) return 0;
    int tensors = 0;
    for (int j = 0; j + 1 < d->n; j += 2) {
        if (d->v[j]->k != PK_STR) return 0;
        if (d->v[j + 1]->k == PK_TENSOR)
            tensors++;
        else if (d->v[j + 1]->k != PK_NONE)
            return 0;
    }
    return tensors > 0;
}

const char *torch_plain_name(const char *k) {
    for (;;) {
        if (strncmp(k, "module.", 7) == 0)
            k += 7;
        else if (strncmp(k, "_orig_mod.", 10) == 0)
            k += 10;
        else
            return k;
    }
}

static int model_arg(const pk *margs, const char *key, int *out) {
    const pk *v = torch_obj_get(margs, key);
    if (v == NULL || (v->k != PK_INT && v->k != PK_BOOL)) return 0;
    *out = (int)v->i;
    return 1;
}

void torch_obj_model_args(const torch_obj *root, torch_model_args *args) {
    memset(args, 0, sizeof *args);
    const pk *margs = torch_obj_get(root, "model_args");
    if (margs == NULL || margs->k != PK_DICT) return;
    args->found = model_arg(margs, "n_layer", &args->n_layer) && model_arg(margs, "n_head", &args->n_head) &&
                  model_arg(margs, "n_embd", &args->n_embd) && model_arg(margs, "block_size", &args->block_size) &&
                  model_arg(margs, "vocab_size", &args->vocab_size);
    args->bias = 1;
    model_arg(margs, "bias", &args->bias);
}

/* the file's map moves to f (f->map), which keeps the tensors' bytes alive after the file's objects are freed */
int torch_state_dict_open(safetensors_file *f, const char *path, torch_model_args *args) {
    memset(f, 0, sizeof *f);
    if (args) memset(args, 0, sizeof *args);
    torch_file *tf;
    if (torch_file_open(&tf, path) != 0) return -1;
    int rc = 0;
    const pk *top = tf->root, *sd = NULL;
    if (is_state_dict(top)) sd = top;
    static const char *const keys[] = {"model", "module", "state_dict", "model_state_dict"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !sd; i++)
        if (is_state_dict(torch_obj_get(top, keys[i]))) sd = torch_obj_get(top, keys[i]);
    if (sd == NULL) {
        rc = zg_errorf("%s: no model state dict in the checkpoint (a dict of tensors, at the top or under \"model\", "
                       "\"module\", \"state_dict\" or \"model_state_dict\")",
                       path);
        goto cleanup;
    }
    if (args) torch_obj_model_args(top, args);
    f->path = zg_strdup(path);
    f->tensors = zg_calloc((size_t)sd->n / 2 + 1, sizeof *f->tensors);
    for (int j = 0; j + 1 < sd->n && rc == 0; j += 2)
        if (sd->v[j + 1]->k == PK_TENSOR) {
            rc = torch_obj_tensor(tf, sd->v[j + 1], torch_plain_name(sd->v[j]->s), &f->tensors[f->n_tensors]);
            if (rc == 0) f->n_tensors++;
        }
    /* DeepSpeed ZeRO-3's model states: every parameter an empty placeholder (the weights are partitioned into the
     * optimizer states files, which were not beside this one: ds_checkpoint.c merges them when they are) */
    int empty = 0;
    for (int a = 0; a < f->n_tensors; a++) empty += f->tensors[a].numel == 0;
    if (rc == 0 && f->n_tensors > 0 && empty == f->n_tensors)
        rc = zg_errorf("%s: every tensor of its state dict is empty: a DeepSpeed ZeRO-3 checkpoint keeps the weights "
                       "partitioned in its optimizer states (the ranks' *_optim_states.pt files); give the tag folder "
                       "that holds all of them, or the output of DeepSpeed's zero_to_fp32.py",
                       path);
    /* one name twice (after the prefixes went): say so rather than take either */
    for (int a = 0; a < f->n_tensors && rc == 0; a++)
        for (int b = a + 1; b < f->n_tensors && rc == 0; b++)
            if (strcmp(f->tensors[a].name, f->tensors[b].name) == 0)
                rc = zg_errorf("%s: tensor '%s' is in the state dict twice (with and without a 'module.' or "
                               "'_orig_mod.' prefix)",
                               path, f->tensors[a].name);
    if (rc == 0) { /* the tensors point into the map: f owns it from here */
        f->map = tf->map;
        memset(&tf->map, 0, sizeof tf->map);
    }
cleanup:
    torch_file_close(tf);
    if (rc != 0) safetensors_close(f);
    return rc;
}
