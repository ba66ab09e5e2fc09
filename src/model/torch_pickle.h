/* PyTorch checkpoints read without Python: torch.save's zip format (<name>/data.pkl, the pickled object, whose
 * tensors refer to the stored records <name>/data/<key>). A restricted unpickler builds the object tree (dicts,
 * lists, tuples, strings, numbers, None, booleans, tensors); a call of anything but torch's tensor rebuilders and
 * collections.OrderedDict makes an opaque object instead: nothing is executed, whatever the file asks for.
 *
 * What it yields is a model's state dict, as safetensors tensors in place in the file's map:
 *   - the top-level object when it is a dict of tensors (transformers' pytorch_model.bin, DeepSpeed's
 *     zero_to_fp32 output, torch.save(model.state_dict()));
 *   - else its "model", "module", "state_dict" or "model_state_dict" entry (nanoGPT's ckpt.pt, DeepSpeed's
 *     mp_rank_00_model_states.pt, common training loops).
 * Names lose "module." and "_orig_mod." prefixes (DDP / DeepSpeed wrappers, torch.compile). Tensors must be
 * contiguous. A nanoGPT checkpoint's "model_args" comes back as its shape. The legacy (pre-1.6, not zip) format
 * is refused with what to do. */
#ifndef ZG_MODEL_TORCH_PICKLE_H
#define ZG_MODEL_TORCH_PICKLE_H

#include "model/safetensors.h"

typedef struct {
    int found; /* a "model_args" dict was there */
    int n_layer, n_head, n_embd, block_size, vocab_size, bias;
} torch_model_args;

/* 1 when the file starts like a zip archive (torch.save's format), 0 otherwise or unreadable */
int torch_file_is_zip(const char *path);
/* Opens path and fills f (safetensors_close frees it) with the state dict's tensors; *args with model_args when
 * present (args may be NULL). 0, or -1 with a one-line error naming the file. */
int torch_state_dict_open(safetensors_file *f, const char *path, torch_model_args *args);

#endif
