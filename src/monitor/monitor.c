#include "monitor/monitor.h"

#include "core/error.h"
#include "core/fileio.h"
#include "monitor/tfrecord.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* stdio buffer of the event file: a run's scalars between two evaluations fit, so the step never
 * waits for a write. */
#define TB_BUFFER_BYTES (1 << 20)

void zg_monitor_config_free(zg_monitor_config *c) {
    free(c->tensorboard.output_path);
    free(c->tensorboard.job_name);
    free(c->csv.output_path);
    free(c->csv.job_name);
    free(c->wandb_project);
    free(c->wandb_team);
    free(c->wandb_run_name);
    memset(c, 0, sizeof *c);
}

char *zg_monitor_sink_dir(const zg_monitor_sink_config *s) {
    const char *job = s->job_name && *s->job_name ? s->job_name : ZG_MONITOR_DEFAULT_JOB;
    if (!s->output_path || !*s->output_path) return zg_strdup(job);
    return zg_path_join(s->output_path, job);
}

void zg_monitor_config_apply_wandb(zg_monitor_config *c, const char *out_dir, char *note, size_t cap) {
    note[0] = '\0';
    if (!c->wandb) return;
    zg_monitor_sink_config *tb = &c->tensorboard;
    if (!tb->enabled) {
        tb->enabled = 1;
        free(tb->output_path);
        tb->output_path = zg_path_join(out_dir, "tensorboard");
        if (c->wandb_run_name) {
            free(tb->job_name);
            tb->job_name = zg_strdup(c->wandb_run_name);
        }
    }
    char *dir = zg_monitor_sink_dir(tb);
    char extra[512] = "";
    size_t n = 0;
    if (c->wandb_project) n += (size_t)snprintf(extra + n, sizeof extra - n, " --project %s", c->wandb_project);
    if (c->wandb_team && n < sizeof extra)
        n += (size_t)snprintf(extra + n, sizeof extra - n, " --entity %s", c->wandb_team);
    snprintf(note, cap,
             "wandb: zgpt has no network client; the metrics are TensorBoard logs in %s: upload them with "
             "'wandb sync --sync-tensorboard%s %s'",
             dir, extra, dir);
    free(dir);
}

static double wall_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

static int open_tb(zg_monitor *m, const zg_monitor_sink_config *s) {
    char *dir = zg_monitor_sink_dir(s);
    int rc = zg_dir_make(dir);
    if (rc != 0) {
        zg_error_prefix("tensorboard.output_path");
        free(dir);
        return -1;
    }
    /* TensorBoard reads every file whose name holds "tfevents", in name order: the time first. */
    char host[128] = "localhost", name[512];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    double t = wall_now();
    snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s.%ld.zgpt", (long long)t, host, (long)getpid());
    m->tb_path = zg_path_join(dir, name);
    free(dir);
    m->tb = fopen(m->tb_path, "wb");
    if (!m->tb) return zg_errorf("tensorboard: cannot create '%s': %s", m->tb_path, zg_strerrno());
    setvbuf(m->tb, NULL, _IOFBF, TB_BUFFER_BYTES);
    zg_tb_event_file_version(&m->buf, t);
    return zg_tfrecord_write(m->tb, m->buf.data, m->buf.len);
}

int zg_monitor_init(zg_monitor *m, const zg_monitor_config *c, int64_t resume_iter, int64_t last_eval_iter) {
    memset(m, 0, sizeof *m);
    zg_pb_buf_init(&m->buf);
    m->resuming = resume_iter >= 0;
    m->keep_train_below = resume_iter;
    m->keep_eval_through = last_eval_iter;
    int rc = -1;
    if (c->tensorboard.enabled && open_tb(m, &c->tensorboard) != 0) goto cleanup;
    if (c->csv.enabled) {
        m->csv_dir = zg_monitor_sink_dir(&c->csv);
        if (zg_dir_make(m->csv_dir) != 0) {
            zg_error_prefix("csv_monitor.output_path");
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    if (rc != 0) zg_monitor_free(m);
    return rc;
}

int zg_monitor_active(const zg_monitor *m) { return m->tb || m->csv_dir; }

static void sink_failed(FILE **f, const char *what, const char *path) {
    fprintf(stderr, "zgpt: warning: %s: cannot write '%s' (%s); this output is off for the rest of the run\n", what,
            path, zg_strerrno());
    fclose(*f);
    *f = NULL;
}

/* Keeps the rows of an earlier run's series that come before the resume point (atomic rewrite). */
static int csv_trim(const char *path, int64_t keep_below) {
    char *text;
    size_t len;
    if (zg_file_read_all(path, &text, &len) != 0) return -1;
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, path);
    char *line = text;
    int first = 1;
    while (rc == 0 && *line) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
        char *end;
        long long step = strtoll(line, &end, 10);
        if (first || (end != line && *end == ',' && step < keep_below)) rc = zg_atomic_write(&af, line, n);
        first = 0;
        line += n;
    }
    free(text);
    if (rc == 0) return zg_atomic_commit(&af, NULL);
    zg_atomic_abort(&af);
    return -1;
}

static FILE *csv_file(zg_monitor *m, const char *tag) {
    for (int i = 0; i < m->n_csv; i++)
        if (strcmp(m->csv[i].tag, tag) == 0) return m->csv[i].f;
    /* DeepSpeed's naming: the tag with '/' and ' ' as '_', a header "step,<last part of the tag>" */
    char fname[256];
    snprintf(fname, sizeof fname, "%s.csv", tag);
    for (char *p = fname; *p; p++)
        if (*p == '/' || *p == ' ') *p = '_';
    char *path = zg_path_join(m->csv_dir, fname);
    int resume = m->resuming;
    int64_t keep = strncmp(tag, "eval/", 5) == 0 ? m->keep_eval_through + 1 : m->keep_train_below;
    FILE *f = NULL;
    if (resume && zg_file_exists(path)) {
        if (csv_trim(path, keep) == 0) f = fopen(path, "a");
    } else {
        f = fopen(path, "w");
        const char *slash = strrchr(tag, '/');
        if (f) fprintf(f, "step,%s\n", slash ? slash + 1 : tag);
    }
    if (!f) {
        fprintf(stderr, "zgpt: warning: csv_monitor: cannot write '%s' (%s); series %s is not written\n", path,
                zg_error_message()[0] ? zg_error_message() : zg_strerrno(), tag);
    }
    free(path);
    m->csv = zg_realloc(m->csv, (size_t)(m->n_csv + 1) * sizeof *m->csv);
    m->csv[m->n_csv].tag = zg_strdup(tag);
    m->csv[m->n_csv].f = f;
    m->n_csv++;
    return f;
}

static void tb_record(zg_monitor *m) {
    if (zg_tfrecord_write(m->tb, m->buf.data, m->buf.len) != 0) sink_failed(&m->tb, "tensorboard", m->tb_path);
}

void zg_monitor_scalar(zg_monitor *m, const char *tag, int64_t step, double value) {
    if (m->tb) {
        zg_tb_event_scalar(&m->buf, wall_now(), step, tag, (float)value);
        tb_record(m);
    }
    if (m->csv_dir) {
        FILE *f = csv_file(m, tag);
        if (f && fprintf(f, "%lld,%.9g\n", (long long)step, value) < 0) {
            for (int i = 0; i < m->n_csv; i++)
                if (m->csv[i].f == f) sink_failed(&m->csv[i].f, "csv_monitor", m->csv[i].tag);
        }
    }
}

void zg_monitor_text(zg_monitor *m, const char *tag, int64_t step, const char *text) {
    if (!m->tb) return;
    zg_tb_event_text(&m->buf, wall_now(), step, tag, text);
    tb_record(m);
}

void zg_monitor_flush(zg_monitor *m) {
    if (m->tb && fflush(m->tb) != 0) sink_failed(&m->tb, "tensorboard", m->tb_path);
    for (int i = 0; i < m->n_csv; i++)
        if (m->csv[i].f && fflush(m->csv[i].f) != 0) sink_failed(&m->csv[i].f, "csv_monitor", m->csv[i].tag);
}

void zg_monitor_free(zg_monitor *m) {
    zg_monitor_flush(m);
    if (m->tb) fclose(m->tb);
    for (int i = 0; i < m->n_csv; i++) {
        if (m->csv[i].f) fclose(m->csv[i].f);
        free(m->csv[i].tag);
    }
    free(m->csv);
    free(m->tb_path);
    free(m->csv_dir);
    zg_pb_buf_free(&m->buf);
    memset(m, 0, sizeof *m);
}
