/* Minimal assertion helpers for the unit tests (ctest is the runner; each test is one executable
 * that returns non-zero when any check failed). */
#ifndef ZG_TESTUTIL_H
#define ZG_TESTUTIL_H

#include "model/gpt2.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int checks;
    int failures;
} zt_state;

extern zt_state zt;

void zt_fail_at(const char *file, int line, const char *fmt, ...);
#define ZT_CHECK(cond)                                                                                                 \
    do {                                                                                                               \
        zt.checks++;                                                                                                   \
        if (!(cond)) zt_fail_at(__FILE__, __LINE__, "check failed: %s", #cond);                                        \
    } while (0)
#define ZT_CHECK_MSG(cond, ...)                                                                                        \
    do {                                                                                                               \
        zt.checks++;                                                                                                   \
        if (!(cond)) zt_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                                      \
    } while (0)
/* |a - b| <= atol + rtol * |b| */
#define ZT_NEAR(a, b, atol, rtol)                                                                                      \
    do {                                                                                                               \
        double _a = (a), _b = (b);                                                                                     \
        zt.checks++;                                                                                                   \
        if (!(_a - _b <= (atol) + (rtol) * (_b < 0 ? -_b : _b) && _b - _a <= (atol) + (rtol) * (_b < 0 ? -_b : _b)))   \
            zt_fail_at(__FILE__, __LINE__, "%s = %.9g, expected %s = %.9g", #a, _a, #b, _b);                           \
    } while (0)

/* Runs a named test function and reports it. */
void zt_run(const char *name, void (*fn)(void));
/* (zt_run: ZT_ONLY=name,name,... in the environment runs only those tests.) */
/* 1 when the environment variable var is unset or empty, or names `name` in its list (separated by commas or
 * spaces): the selections ZT_ONLY and the benches' variant lists. */
int zt_env_selects(const char *var, const char *name);
/* Prints the summary; returns the process exit status. */
int zt_finish(void);

/* Deterministic random numbers for tests. */
uint64_t zt_rand_u64(uint64_t *state);
float zt_rand_uniform(uint64_t *state); /* [-1, 1) */

/* A fresh temporary directory under $TMPDIR (removed by zt_rmtree). */
char *zt_tmpdir(const char *tag);
void zt_rmtree(const char *path);
/* gpt2_forward / gpt2_forward_train that must succeed (a failed check otherwise): the mean loss. */
float zt_forward(gpt2_model *m, const int32_t *in, const int32_t *tg, int B, int T);
float zt_forward_train(gpt2_model *m, const int32_t *in, const int32_t *tg, int B, int T, float loss_scale);
/* The repository root ($ZGPT_SRC, or the compiled-in source dir). */
const char *zt_src_dir(void);

#endif
