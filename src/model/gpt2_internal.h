/* What gpt2.c shares with gpt2_cached.c (the KV-cache forward): a layer's parameter addresses (under
 * ZeRO's redirects; single tensors: gpt2_param_ptr), the layer hooks and the token check. Not part of the API. */
#ifndef ZGPT_MODEL_GPT2_INTERNAL_H
#define ZGPT_MODEL_GPT2_INTERNAL_H

#include "model/gpt2.h"

/* One layer's parameter (or gradient) tensors, resolved once per pass. */
typedef struct {
    void *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} layer_params;

/* layer l's twelve tensors: which 0 parameters, 1 gradients */
layer_params gpt2_layer_ptrs(const gpt2_model *m, int which, int l);
/* the model's hooks around layer `layer` (-1: the embeddings / the head), bwd 1 in the backward */
void gpt2_hook_before(gpt2_model *m, int layer, int bwd);
void gpt2_hook_after(gpt2_model *m, int layer, int bwd);
/* 0, or an error naming `what`[i] when a token id is outside [0, vocab_size) (-1 allowed with allow_ignore) */
int gpt2_check_tokens(const gpt2_model *m, const int32_t *tok, size_t n, int allow_ignore, const char *what);

#endif
