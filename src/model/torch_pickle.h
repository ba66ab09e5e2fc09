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

/* A torch.save file open with its object tree (ds_checkpoint.c reads DeepSpeed's optimizer states through it): the
 * map, the zip's index and the unpickled objects, all alive until torch_file_close. Objects are read-only views:
 * the accessors take NULL (and objects of another kind) and answer NULL / -1. */
typedef struct torch_file torch_file;
typedef struct pk torch_obj;

/* 0, or -1 with a one-line error naming the file (not a zip, the legacy format, compressed, a pickle zgpt cannot
 * read) */
int torch_file_open(torch_file **tf, const char *path);
void torch_file_close(torch_file *tf);
const torch_obj *torch_file_root(const torch_file *tf);
/* a dict's value under a string key */
const torch_obj *torch_obj_get(const torch_obj *dict, const char *key);
/* items of a list, tuple or set; a dict's key/value pairs; -1 for anything else */
int torch_obj_count(const torch_obj *o);
const torch_obj *torch_obj_item(const torch_obj *list, int i);
const char *torch_obj_dict_key(const torch_obj *dict, int i); /* NULL when not a string */
const torch_obj *torch_obj_dict_value(const torch_obj *dict, int i);
int torch_obj_is_none(const torch_obj *o); /* None, or absent (NULL) */
int torch_obj_is_tensor(const torch_obj *o);
/* an int, a bool, or an IntEnum member (its class called with its value) */
int torch_obj_int(const torch_obj *o, int64_t *out);
/* a tuple of ints or a torch.Size */
int torch_obj_shape(const torch_obj *o, int64_t *shape, int *ndim);
/* A contiguous tensor as a view into the file's map (x->name a heap copy of name). 0, or -1 with a one-line error
 * naming the file and name (a strided view, a missing or compressed record, outside its storage). */
int torch_obj_tensor(const torch_file *tf, const torch_obj *t, const char *name, safetensors_tensor *x);
/* a nanoGPT checkpoint's "model_args" (n_layer, n_head, n_embd, block_size, vocab_size, bias) from root, the file's
 * top-level dict; args->found 0 when absent */
void torch_obj_model_args(const torch_obj *root, torch_model_args *args);
/* the name without "module." and "_orig_mod." prefixes (DDP and DeepSpeed wrappers, torch.compile) */
const char *torch_plain_name(const char *name);

/* 1 when the file starts like a zip archive (torch.save's format), 0 otherwise or unreadable */
int torch_file_is_zip(const char *path);
/* Opens path and fills f (safetensors_close frees it) with the state dict's tensors; *args with model_args when
 * present (args may be NULL). 0, or -1 with a one-line error naming the file. */
int torch_state_dict_open(safetensors_file *f, const char *path, torch_model_args *args);

#endif
