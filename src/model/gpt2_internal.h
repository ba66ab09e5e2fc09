/* What gpt2.c shares with gpt2_cached.c (the KV-cache forward): a layer's parameter addresses (under
 * ZeRO's redirects; single tensors: gpt2_param_ptr), the layer hooks and the token check. Not part of the API. */
#ifndef ZGPT_MODEL_GPT2_INTERNAL_H
#define ZGPT_MODEL_GPT2_INTERNAL_H

#include "model/gpt2.h"

#include <stddef.h>
#include <stdint.h>

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

/* gpt2_graph.c: a training pass's device work recorded once and replayed. The passes: */
enum { GPT2_PASS_FORWARD = 0, GPT2_PASS_BACKWARD = 1, GPT2_PASSES = 2 };
/* 1 when the passes may be recorded now: m->record, a backend that records, no hooks (their work would be
 * recorded with the pass and not redone at a replay), no profile (it waits for every op), recording not
 * turned off after a failure */
int gpt2_graph_usable(const gpt2_model *m);
/* The key of a pass's recording: the shape, every buffer the pass reads or writes (activations, tokens,
 * losses, parameters, gradients, their group redirects), the recompute flags, and extra (n bytes: the
 * pass's scalars). Equal keys: equal device work. */
uint64_t gpt2_graph_key(const gpt2_model *m, const void *extra, size_t n);
/* Runs fn(m, arg), which issues pass `pass`'s device work: directly the first time a key is seen, recorded
 * and launched the second time in a row, and the recording replayed (fn not called) while the key stays.
 * A failed recording or one redone too often (its key keeps changing) prints one line and turns recording
 * off for the model; fn then runs directly. fn's host effects must not matter to a replay. */
void gpt2_graph_run(gpt2_model *m, int pass, uint64_t key, void (*fn)(gpt2_model *m, void *arg), void *arg);
/* Destroys the recordings (they hold the buffers' addresses: before the activations are released); whether
 * recording was turned off stays. gpt2_graph_free: all of it (gpt2_free). */
void gpt2_graph_drop(gpt2_model *m);
void gpt2_graph_free(gpt2_model *m);

#endif
