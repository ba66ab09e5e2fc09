#define _GNU_SOURCE
#include "testutil.h"

#include "core/error.h"
#include "model/gpt2.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

zt_state zt;
static const char *current_test = "";

void zt_fail_at(const char *file, int line, const char *fmt, ...) {
    zt.failures++;
    if (zt.failures > 50) return; /* enough to diagnose */
    fprintf(stderr, "FAIL [%s] %s:%d: ", current_test, file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int zt_env_selects(const char *var, const char *name) {
    const char *list = getenv(var);
    if (list == NULL || *list == '\0') return 1;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ", ");
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p += len + (p[len] != '\0');
    }
    return 0;
}

void zt_run(const char *name, void (*fn)(void)) {
    /* ZT_ONLY=a,b,c runs only the tests of those names (a device call that checks one kernel family) */
    if (!zt_env_selects("ZT_ONLY", name)) {
        printf("skip %s (ZT_ONLY)\n", name);
        return;
    }
    int before = zt.failures;
    current_test = name;
    fn();
    printf("%s %s\n", zt.failures == before ? "ok  " : "FAIL", name);
    fflush(stdout);
}

int zt_finish(void) {
    printf("%d checks, %d failed\n", zt.checks, zt.failures);
    return zt.failures ? 1 : 0;
}

uint64_t zt_rand_u64(uint64_t *s) {
    /* xorshift64* */
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float zt_rand_uniform(uint64_t *s) { return (float)((zt_rand_u64(s) >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0); }

char *zt_tmpdir(const char *tag) {
    const char *base = getenv("TMPDIR");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/zgpt-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        exit(1);
    }
    return p;
}

void zt_rmtree(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

const char *zt_src_dir(void) {
    const char *s = getenv("ZGPT_SRC");
    return s && *s ? s : ".";
}

float zt_forward(gpt2_model *m, const int32_t *in, const int32_t *tg, int B, int T) {
    float loss = NAN;
    ZT_CHECK_MSG(gpt2_forward(m, in, tg, B, T, &loss) == 0, "gpt2_forward: %s", zg_error_message());
    return loss;
}

float zt_forward_train(gpt2_model *m, const int32_t *in, const int32_t *tg, int B, int T, float loss_scale) {
    float loss = NAN;
    ZT_CHECK_MSG(gpt2_forward_train(m, in, tg, B, T, loss_scale, &loss) == 0, "gpt2_forward_train: %s",
                 zg_error_message());
    return loss;
}
