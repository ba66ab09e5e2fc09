/* The decode-step ops on the CPU (one new position per row, the position read from memory): the
 * encoder and attention at that position reuse the general ops; decode_advance moves the rows on. */
#include "backend/cpu/cpu_internal.h"

void cpu_encoder_forward_at(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                            const int32_t *pos, int B, int C) {
    /* B rows of one position each: encoder_forward over (B, T=1) with wpe's rows starting at pos[0] */
    cpu_encoder_forward(be, out, tokens, wte, (const float *)wpe + (size_t)pos[0] * C, B, 1, C);
}

void cpu_attention_decode(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                          int B, int maxT, int C, int NH) {
    cpu_attention_forward_cached(be, out, qkv, kcache, vcache, B, 1, pos[0], maxT, C, NH);
}

void cpu_decode_advance(zg_backend *be, int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                        const int32_t *plen, int B, int maxT) {
    (void)be;
    int t = pos[0] + 1;
    for (int b = 0; b < B; b++) {
        int32_t *cell = seq + (size_t)b * maxT + t;
        if (t >= plen[b]) *cell = ids[b];
        tokens[b] = *cell;
    }
    pos[0] = t;
    pos[1] = t + 1;
}
