/* DeepSpeed checkpoints' fp32 master weights (ds_checkpoint.h): the ranks' optimizer states opened in place
 * (torch_pickle.h), each parameter a list of (piece, offset) ranges read on demand. */
#include "model/ds_checkpoint.h"

#include "core/error.h"
#include "core/fileio.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_MAX_RANKS 65536

static const char k_model_states[] = "mp_rank_00_model_states.pt";
static const char k_zero3_model_states[] = "zero_pp_rank_0_mp_rank_00_model_states.pt";

/* A rank's flat fp32 vector: its pieces (the optimizer's groups, ZeRO-3's sub-groups) one after another */
typedef struct {
    safetensors_tensor *pieces;
    int n;
    size_t numel;
} ds_flat;

typedef struct ds_merge ds_merge;

/* One parameter: numel elements of the concatenation of `flat` (a list of flats, each a concatenation of pieces)
 * taken as ZeRO cut it: stage 1-2, one range [offset, offset + numel) of the ranks' flats joined; stage 3 (and
 * ZeRO-3's frozen fragments), per-rank ranges [offset, offset + part) joined, then the first numel. */
typedef struct {
    ds_merge *m;
    const ds_flat *flats; /* ranks' flats (trainable), or the parameter's own fragments (frozen) */
    int n_flats;
    int per_rank;  /* the stage-3 cut: part elements of each flat from offset */
    size_t offset; /* in the joined flats (stage 1-2) or in each flat (per_rank) */
    size_t numel;  /* the parameter's */
    size_t part;   /* per_rank: ceil(numel / n_flats) */
    const char *name;
} ds_param;

struct ds_merge {
    char *dir;
    int world, stage, noted;
    char kind[32];      /* "ZeRO-2", or "bf16 optimizer" */
    torch_file **files; /* every file opened: the optimizer states (world), then model states */
    int n_files;
    ds_flat *ranks;  /* world flats of a group (stage 1-2: one per group and rank, rank-major inside a group) */
    int n_groups;    /* stage 1-2 */
    ds_flat *frozen; /* the frozen parameters' fragments, n_frozen x world (ZeRO-3) or x 1 */
    ds_param *params;
    int n_params, n_frozen;
};

static void ds_merge_free(void *p) {
    ds_merge *m = p;
    if (m == NULL) return;
    for (int i = 0; i < m->n_files; i++) torch_file_close(m->files[i]);
    free(m->files);
    int nflat = m->world * m->n_groups;
    for (int i = 0; m->ranks && i < nflat; i++) {
        for (int k = 0; k < m->ranks[i].n; k++) free(m->ranks[i].pieces[k].name);
        free(m->ranks[i].pieces);
    }
    free(m->ranks);
    int nfz = m->n_frozen * (m->stage == 3 ? m->world : 1);
    for (int i = 0; m->frozen && i < nfz; i++) {
        for (int k = 0; k < m->frozen[i].n; k++) free(m->frozen[i].pieces[k].name);
        free(m->frozen[i].pieces);
    }
    free(m->frozen);
    free(m->params);
    free(m->dir);
    free(m);
}

/* n elements of the joined flats from element `from` into out */
static int flats_copy(const ds_param *p, const ds_flat *flats, int n_flats, size_t from, size_t n, float *out) {
    for (int f = 0; f < n_flats && n > 0; f++) {
        const ds_flat *fl = &flats[f];
        if (from >= fl->numel) {
            from -= fl->numel;
            continue;
        }
        for (int k = 0; k < fl->n && n > 0; k++) {
            const safetensors_tensor *t = &fl->pieces[k];
            if (from >= t->numel) {
                from -= t->numel;
                continue;
            }
            size_t take = t->numel - from < n ? t->numel - from : n;
            size_t es = t->nbytes / (t->numel ? t->numel : 1);
            safetensors_convert_f32(t->dtype, t->data + from * es, take, out);
            out += take, n -= take, from = 0;
        }
    }
    if (n > 0)
        return zg_errorf("%s: parameter '%s' runs past the ranks' fp32 partitions: the checkpoint is incomplete",
                         p->m->dir, p->name);
    return 0;
}

static int ds_param_read(const void *ctx, float *out) {
    const ds_param *p = ctx;
    ds_merge *m = p->m;
    if (!m->noted) {
        m->noted = 1;
        if (zg_log_rank() <= 0) /* (every rank of a run merges it: said once) */
            fprintf(
                stderr,
                "note: %s: a DeepSpeed %s checkpoint of %d rank%s: its fp32 master weights are merged from the ranks' "
                "optimizer states (as zero_to_fp32.py does)\n",
                m->dir, m->kind, m->world, m->world == 1 ? "" : "s");
    }
    if (!p->per_rank) return flats_copy(p, p->flats, p->n_flats, p->offset, p->numel, out);
    for (int r = 0; r < p->n_flats; r++) {
        size_t at = (size_t)r * p->part;
        if (at >= p->numel) break;
        size_t n = p->numel - at < p->part ? p->numel - at : p->part;
        if (flats_copy(p, &p->flats[r], 1, p->offset, n, out + at) != 0) return -1;
    }
    return 0;
}

/* ---- reading the folder --------------------------------------------------------------------------------------- */

/* name = [bf16_|fp16_]zero_pp_rank_<r>_mp_rank_<mp>_optim_states.pt: its rank, mp rank and prefix (0 none, 1 bf16,
 * 2 fp16); 0, or -1 when it is not such a name */
static int optim_name(const char *name, int *rank, int *mp, int *prefix) {
    static const char *const pre[] = {"", "bf16_", "fp16_"};
    for (int p = 2; p >= 0; p--) {
        size_t k = strlen(pre[p]);
        if (strncmp(name, pre[p], k) != 0) continue;
        int r = -1, q = -1, used = 0;
        if (sscanf(name + k, "zero_pp_rank_%d_mp_rank_%d_optim_states.pt%n", &r, &q, &used) != 2) return -1;
        char again[256];
        snprintf(again, sizeof again, "%szero_pp_rank_%d_mp_rank_%02d_optim_states.pt", pre[p], r, q);
        if (strcmp(again, name) != 0 || r < 0 || r >= DS_MAX_RANKS) return -1;
        *rank = r, *mp = q, *prefix = p;
        return 0;
    }
    return -1;
}

char *ds_model_states_path(const char *dir) {
    const char *const names[] = {k_model_states, k_zero3_model_states};
    for (int i = 0; i < 2; i++) {
        char *p = zg_path_join(dir, names[i]);
        if (zg_file_exists(p)) return p;
        free(p);
    }
    return NULL;
}

/* the optimizer states files of dir, by rank: *world (the highest rank + 1), their prefix; 0 when there are none */
static int list_optim(const char *dir, char ***names, int *world, int *prefix, int *other_mp, int *mixed) {
    *names = NULL, *world = 0, *prefix = -1, *other_mp = 0, *mixed = 0;
    DIR *d = opendir(dir);
    if (d == NULL) return 0;
    int cap = 0, n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int r, mp, p;
        if (optim_name(e->d_name, &r, &mp, &p) != 0) continue;
        if (mp != 0) {
            *other_mp = 1;
            continue;
        }
        if (*prefix >= 0 && p != *prefix) *mixed = 1;
        *prefix = p;
        if (r >= cap) {
            int nc = cap ? cap : 8;
            while (nc <= r) nc *= 2;
            *names = zg_realloc(*names, (size_t)nc * sizeof **names);
            memset(*names + cap, 0, (size_t)(nc - cap) * sizeof **names);
            cap = nc;
        }
        if ((*names)[r] == NULL) n++;
        free((*names)[r]);
        (*names)[r] = zg_strdup(e->d_name);
        if (r + 1 > *world) *world = r + 1;
    }
    closedir(d);
    return n;
}

int ds_checkpoint_has_optim(const char *path) {
    const char *b = zg_path_base(path);
    if (strcmp(b, k_model_states) != 0 && strcmp(b, k_zero3_model_states) != 0) return 0;
    char *dir = zg_path_dir(path);
    char **names;
    int world, prefix, other, mixed;
    int n = list_optim(dir, &names, &world, &prefix, &other, &mixed);
    for (int i = 0; i < world; i++) free(names[i]);
    free(names);
    free(dir);
    return n > 0 || other;
}

/* the rank's flat from a list of tensors (the optimizer's groups): group g0 only, or all of them (g0 < 0) */
static int flat_from_list(torch_file *tf, const torch_obj *list, int g0, ds_flat *fl, const char *key,
                          const char *file) {
    int n = torch_obj_count(list);
    if (n <= 0) return zg_errorf("%s: optimizer_state_dict['%s'] is not a list of tensors", file, key);
    int lo = g0 < 0 ? 0 : g0, hi = g0 < 0 ? n : g0 + 1;
    fl->pieces = zg_calloc((size_t)(hi - lo), sizeof *fl->pieces);
    for (int i = lo; i < hi; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s[%d]", key, i);
        safetensors_tensor *t = &fl->pieces[fl->n];
        if (torch_obj_tensor(tf, torch_obj_item(list, i), what, t) != 0) return -1;
        fl->n++;
        if (!t->supported)
            return zg_errorf("%s: %s has dtype %s; the fp32 master weights must be F32, F16 or BF16", file, what,
                             t->dtype_name);
        fl->numel += t->numel;
    }
    return 0;
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* the element count of a shape from a file; 0 with an error for a negative or absurd one */
static int shape_numel(const int64_t *shape, int nd, size_t *numel, const char *file, const char *name) {
    *numel = 1;
    for (int k = 0; k < nd; k++) {
        if (shape[k] < 0 || (shape[k] > 0 && *numel > ((size_t)1 << 48) / (size_t)shape[k]))
            return zg_errorf("%s: '%s' has an impossible shape", file, name);
        *numel *= (size_t)shape[k];
    }
    return 0;
}

/* every (name, shape) of param_shapes (a list of dicts, one per group) into m->params; flats set later */
static int read_param_shapes(ds_merge *m, const torch_obj *shapes, const char *file, int **group_of) {
    int ng = torch_obj_count(shapes), total = 0;
    for (int g = 0; g < ng; g++) {
        int c = torch_obj_count(torch_obj_item(shapes, g));
        if (c < 0) return zg_errorf("%s: param_shapes[%d] is not a dict of names and shapes", file, g);
        total += c;
    }
    m->params = zg_calloc((size_t)total + 1, sizeof *m->params);
    *group_of = zg_calloc((size_t)total + 1, sizeof **group_of);
    for (int g = 0; g < ng; g++) {
        const torch_obj *d = torch_obj_item(shapes, g);
        for (int i = 0; i < torch_obj_count(d); i++) {
            const char *name = torch_obj_dict_key(d, i);
            int64_t shape[SAFETENSORS_MAX_DIMS];
            int nd = 0;
            if (name == NULL || torch_obj_shape(torch_obj_dict_value(d, i), shape, &nd) != 0)
                return zg_errorf("%s: param_shapes[%d] item %d is not a name and a shape", file, g, i);
            ds_param *p = &m->params[m->n_params];
            if (shape_numel(shape, nd, &p->numel, file, name) != 0) return -1;
            p->m = m, p->name = name;
            (*group_of)[m->n_params++] = g;
        }
    }
    return ng;
}

/* f's tensor for parameter i: its name and shape from the shapes object */
static void param_tensor(safetensors_tensor *t, const ds_param *p, const torch_obj *shape) {
    memset(t, 0, sizeof *t);
    t->name = zg_strdup(torch_plain_name(p->name));
    t->dtype = ZG_F32;
    t->supported = 1;
    snprintf(t->dtype_name, sizeof t->dtype_name, "F32");
    torch_obj_shape(shape, t->shape, &t->ndim);
    t->numel = p->numel;
    t->nbytes = p->numel * 4;
    t->read = ds_param_read;
    t->read_ctx = p;
}

int ds_checkpoint_open(safetensors_file *f, const char *path, torch_model_args *args) {
    memset(f, 0, sizeof *f);
    if (args) memset(args, 0, sizeof *args);
    ds_merge *m = zg_calloc(1, sizeof *m);
    m->dir = zg_path_dir(path);
    char **names = NULL;
    int prefix, other_mp, mixed, rc = 0, *group_of = NULL;
    int n = list_optim(m->dir, &names, &m->world, &prefix, &other_mp, &mixed), nw = m->world;
    const char *mfile = path;
    const torch_obj *ms = NULL, *shapes = NULL;
    if (other_mp) {
        rc = zg_errorf("%s: a model-parallel DeepSpeed checkpoint (optimizer states of mp_rank 01 or above): zgpt "
                       "merges data-parallel ZeRO checkpoints only; convert it with DeepSpeed's ds_to_universal.py "
                       "or zero_to_fp32.py first",
                       m->dir);
        goto cleanup;
    }
    if (mixed) {
        rc = zg_errorf("%s: optimizer states of two kinds (zero_pp_rank_* and bf16_zero_pp_rank_*): two runs' "
                       "checkpoints in one folder; keep one",
                       m->dir);
        goto cleanup;
    }
    for (int r = 0; r < m->world && rc == 0; r++)
        if (names[r] == NULL)
            rc = zg_errorf("%s: rank %d's optimizer states (%szero_pp_rank_%d_mp_rank_00_optim_states.pt) are missing "
                           "(%d of %d ranks' files are there): every rank's file is needed",
                           m->dir, r,
                           prefix == 1   ? "bf16_"
                           : prefix == 2 ? "fp16_"
                                         : "",
                           r, n, m->world);
    if (rc != 0) goto cleanup;
    m->files = zg_calloc((size_t)m->world + (size_t)m->world + 1, sizeof *m->files);
    /* the model states: param_shapes (None without a ZeRO optimizer), the frozen parameters */
    if (torch_file_open(&m->files[m->n_files], path) != 0) {
        rc = -1;
        goto cleanup;
    }
    ms = torch_file_root(m->files[m->n_files++]);
    if (args) torch_obj_model_args(ms, args);
    shapes = torch_obj_get(ms, "param_shapes");
    if (torch_obj_is_none(shapes)) {
        rc = 1;
        goto cleanup;
    }
    int ng = read_param_shapes(m, shapes, mfile, &group_of);
    if (ng <= 0) {
        rc = ng == 0 ? zg_errorf("%s: param_shapes is empty or not a list of dicts", mfile) : -1;
        goto cleanup;
    }
    /* every rank's optimizer states: the stage, the rank count, the fp32 partition */
    int64_t stage0 = -1;
    for (int r = 0; r < m->world && rc == 0; r++) {
        char *p = zg_path_join(m->dir, names[r]);
        torch_file *tf = NULL;
        if (torch_file_open(&tf, p) != 0) {
            free(p);
            rc = -1;
            break;
        }
        m->files[m->n_files++] = tf;
        const torch_obj *od = torch_obj_get(torch_file_root(tf), "optimizer_state_dict");
        int64_t stage = 1, count = -1;
        const torch_obj *pc = torch_obj_get(od, "partition_count");
        if (od == NULL)
            rc = zg_errorf("%s: no optimizer_state_dict: not a DeepSpeed optimizer states file", p);
        else if (!torch_obj_is_none(torch_obj_get(od, "zero_stage")) &&
                 torch_obj_int(torch_obj_get(od, "zero_stage"), &stage) != 0)
            rc = zg_errorf("%s: optimizer_state_dict['zero_stage'] is not a ZeRO stage", p);
        else if (stage < 1 || stage > 3)
            rc = zg_errorf("%s: optimizer_state_dict['zero_stage'] is %lld: stages 1-3 are known", p, (long long)stage);
        /* one per group, or one (ZeRO-3); the dp world is their largest (zero_to_fp32's rule) */
        for (int i = 0; rc == 0 && i < (torch_obj_count(pc) > 0 ? torch_obj_count(pc) : 1); i++) {
            int64_t c;
            if (torch_obj_int(torch_obj_count(pc) > 0 ? torch_obj_item(pc, i) : pc, &c) != 0)
                rc = zg_errorf("%s: optimizer_state_dict['partition_count'] is not a rank count", p);
            else if (c > count)
                count = c;
        }
        if (rc == 0 && count != m->world)
            rc = zg_errorf("%s: written by a run of %lld ranks, but the folder has optimizer states for %d: an older "
                           "checkpoint overwritten, or a rank's save that did not finish",
                           p, (long long)count, m->world);
        if (rc == 0 && r > 0 && stage != stage0)
            rc =
                zg_errorf("%s: ZeRO stage %lld, where rank 0's file says %lld", p, (long long)stage, (long long)stage0);
        if (rc == 0 && r == 0) {
            stage0 = stage;
            m->stage = (int)stage;
            int zs = !torch_obj_is_none(torch_obj_get(od, "zero_stage"));
            if (zs)
                snprintf(m->kind, sizeof m->kind, "ZeRO-%d", m->stage);
            else
                snprintf(m->kind, sizeof m->kind, "%s optimizer", prefix == 2 ? "fp16" : "bf16");
            m->n_groups = m->stage == 3 ? 1 : ng;
            m->ranks = zg_calloc((size_t)m->world * (size_t)m->n_groups, sizeof *m->ranks);
        }
        const char *key = m->stage == 3 ? "fp32_flat_groups" : "single_partition_of_fp32_groups";
        const torch_obj *groups = torch_obj_get(od, key);
        if (rc == 0 && torch_obj_count(groups) < 0) rc = zg_errorf("%s: optimizer_state_dict has no '%s'", p, key);
        if (rc == 0 && m->stage != 3 && torch_obj_count(groups) != ng)
            rc = zg_errorf("%s: %d fp32 groups, but the model states' param_shapes has %d", p, torch_obj_count(groups),
                           ng);
        if (rc == 0 && m->stage == 3) rc = flat_from_list(tf, groups, -1, &m->ranks[r], key, p);
        for (int g = 0; rc == 0 && m->stage != 3 && g < ng; g++)
            rc = flat_from_list(tf, groups, g, &m->ranks[g * m->world + r], key, p);
        if (rc == 0 && m->stage == 3 && r > 0 && m->ranks[r].numel != m->ranks[0].numel)
            rc = zg_errorf("%s: %zu fp32 elements, where rank 0 has %zu: ZeRO-3 partitions are equal", p,
                           m->ranks[r].numel, m->ranks[0].numel);
        free(p);
    }
    if (rc != 0) goto cleanup;
    /* place the trainable parameters, checked as zero_to_fp32.py checks them */
    if (m->stage == 3) {
        size_t off = 0;
        for (int i = 0; i < m->n_params; i++) {
            ds_param *p = &m->params[i];
            p->flats = m->ranks, p->n_flats = m->world, p->per_rank = 1, p->offset = off;
            p->part = (p->numel + (size_t)m->world - 1) / (size_t)m->world;
            off += p->part;
        }
        if (off != m->ranks[0].numel)
            rc = zg_errorf("%s: the parameters take %zu fp32 elements of each rank's partition, which holds %zu: "
                           "param_shapes and the optimizer states do not match",
                           m->dir, off, m->ranks[0].numel);
    } else {
        for (int g = 0, i = 0; g < ng && rc == 0; g++) {
            size_t off = 0, avail = 0;
            for (int r = 0; r < m->world; r++) avail += m->ranks[g * m->world + r].numel;
            for (; i < m->n_params && group_of[i] == g; i++) {
                ds_param *p = &m->params[i];
                p->flats = &m->ranks[g * m->world], p->n_flats = m->world, p->offset = off;
                off += p->numel;
            }
            /* ZeRO 1-2 pad each group to a multiple of 2 x world (NCCL alignment) and drop the padding when saving;
             * the bf16 optimizer keeps its padding at the end */
            int ok = m->kind[0] == 'Z' ? align_up(off, 2 * (size_t)m->world) == align_up(avail, 2 * (size_t)m->world)
                                       : off <= avail;
            if (!ok)
                rc = zg_errorf("%s: group %d's parameters take %zu fp32 elements and the ranks' partitions hold %zu: "
                               "param_shapes and the optimizer states do not match",
                               m->dir, g, off, avail);
        }
    }
    if (rc != 0) goto cleanup;
    /* the frozen parameters (requires_grad false): whole in the model states (ZeRO 1-2), or a piece in each rank's
     * (ZeRO-3) */
    const torch_obj *fshapes = torch_obj_get(ms, "frozen_param_shapes");
    int nfz = torch_obj_count(fshapes) > 0 ? torch_obj_count(fshapes) : 0;
    int nfrag = m->stage == 3 ? m->world : 1;
    const torch_obj **frag_dicts = zg_calloc((size_t)nfrag, sizeof *frag_dicts);
    if (nfz > 0) {
        frag_dicts[0] = torch_obj_get(ms, "frozen_param_fragments");
        for (int r = 1; r < nfrag && rc == 0; r++) {
            char nm[96];
            snprintf(nm, sizeof nm, "zero_pp_rank_%d_mp_rank_00_model_states.pt", r);
            char *p = zg_path_join(m->dir, nm);
            torch_file *tf = NULL;
            if (torch_file_open(&tf, p) != 0)
                rc = zg_error_prefix("rank %d's model states hold its piece of the frozen parameters", r);
            else
                m->files[m->n_files++] = tf,
                frag_dicts[r] = torch_obj_get(torch_file_root(tf), "frozen_param_fragments");
            free(p);
        }
        m->params = zg_realloc(m->params, (size_t)(m->n_params + nfz) * sizeof *m->params);
        m->frozen = zg_calloc((size_t)nfz * (size_t)nfrag, sizeof *m->frozen);
        m->n_frozen = nfz;
    }
    for (int i = 0; i < nfz && rc == 0; i++) {
        const char *name = torch_obj_dict_key(fshapes, i);
        int64_t shape[SAFETENSORS_MAX_DIMS];
        int nd = 0;
        if (name == NULL || torch_obj_shape(torch_obj_dict_value(fshapes, i), shape, &nd) != 0) {
            rc = zg_errorf("%s: frozen_param_shapes item %d is not a name and a shape", mfile, i);
            break;
        }
        ds_param *p = &m->params[m->n_params];
        memset(p, 0, sizeof *p);
        p->m = m, p->name = name;
        if ((rc = shape_numel(shape, nd, &p->numel, mfile, name)) != 0) break;
        p->flats = &m->frozen[(size_t)i * nfrag], p->n_flats = nfrag;
        size_t have = 0;
        for (int r = 0; r < nfrag && rc == 0; r++) {
            ds_flat *fl = &m->frozen[(size_t)i * nfrag + r];
            fl->pieces = zg_calloc(1, sizeof *fl->pieces);
            char what[600];
            snprintf(what, sizeof what, "frozen_param_fragments['%s']", name);
            rc = torch_obj_tensor(m->files[r == 0 ? 0 : m->n_files - nfrag + r], torch_obj_get(frag_dicts[r], name),
                                  what, &fl->pieces[0]);
            if (rc == 0) fl->n = 1, fl->numel = fl->pieces[0].numel, have += fl->numel;
        }
        if (rc == 0 && have < p->numel)
            rc = zg_errorf("%s: frozen parameter '%s' has %zu of its %zu elements", m->dir, name, have, p->numel);
        if (rc == 0) m->n_params++;
    }
    free(frag_dicts);
    if (rc != 0) goto cleanup;
    /* the file: one tensor per parameter; shapes from param_shapes / frozen_param_shapes */
    f->path = zg_strdup(path);
    f->tensors = zg_calloc((size_t)m->n_params + 1, sizeof *f->tensors);
    for (int g = 0, i = 0; g < torch_obj_count(shapes); g++)
        for (int k = 0; k < torch_obj_count(torch_obj_item(shapes, g)); k++, i++)
            param_tensor(&f->tensors[i], &m->params[i], torch_obj_dict_value(torch_obj_item(shapes, g), k));
    for (int k = 0; k < nfz; k++)
        param_tensor(&f->tensors[m->n_params - nfz + k], &m->params[m->n_params - nfz + k],
                     torch_obj_dict_value(fshapes, k));
    f->n_tensors = m->n_params;
    for (int a = 0; a < f->n_tensors && rc == 0; a++)
        for (int b = a + 1; b < f->n_tensors && rc == 0; b++)
            if (strcmp(f->tensors[a].name, f->tensors[b].name) == 0)
                rc = zg_errorf("%s: parameter '%s' is named twice in param_shapes", mfile, f->tensors[a].name);
    f->owner = m, f->owner_free = ds_merge_free;
    m = NULL;
cleanup:
    for (int r = 0; r < nw; r++) free(names[r]);
    free(names);
    free(group_of);
    if (m) ds_merge_free(m);
    if (rc != 0 && f->owner) safetensors_close(f);
    return rc;
}
