/* llm.c's GPT-2 model files, read in place: gpt2_124M.bin and its kin (train_gpt2.py's write_model) and the
 * checkpoints train_gpt2.cu writes into its output_log_dir (model_<step>.bin, then DONE_<step> once the step's
 * files are complete). docs/FORMATS.md, "llm.c model files".
 *
 *   int32 header[256]: [0] 20240326, [1] version (3: fp32 tensors, 5: bf16), [2] max_seq_len, [3] vocab_size,
 *                      [4] num_layers, [5] num_heads, [6] channels, [7] padded_vocab_size
 *   then the tensors back to back, little-endian, nn.Linear's (out, in) layout, each stacked over the layers:
 *   wte (Vp, C), wpe (maxT, C), ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C), attprojw (L, C, C),
 *   attprojb (L, C), ln2w (L, C), ln2b (L, C), fcw (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C),
 *   lnfw (C), lnfb (C) */
#ifndef ZG_MODEL_LLMC_MODEL_H
#define ZG_MODEL_LLMC_MODEL_H

#include "model/gpt2.h"
#include "model/safetensors.h"
#include "model/torch_pickle.h"

#define LLMC_MODEL_MAGIC 20240326

/* 1 when the file starts with llm.c's model magic */
int llmc_file_is_model(const char *path);
/* The newest complete checkpoint of an llm.c output_log_dir: model_<step>.bin of the largest step with a DONE_<step>
 * beside it (heap path), else NULL */
char *llmc_latest_model(const char *dir);
/* Opens an llm.c model file: f gets its tensors under Hugging Face GPT-2's names ("h.0.attn.c_attn.weight", ...,
 * wte as its first vocab_size rows), in place in the file's map; *args the header's shape (args->found = 1).
 * 0, or -1 with a one-line error naming the file (magic, version, shape, size). */
int llmc_model_open(safetensors_file *f, const char *path, torch_model_args *args);

/* Writes params (zgpt's flat buffer for cfg) as an llm.c model file: version 3 (dtype ZG_F32) or 5 (ZG_BF16), wte
 * with zgpt's padding rows (zeros), atomically. 0, or -1 with a one-line error (fp16 has no llm.c form). */
int llmc_model_write(const char *path, const gpt2_config *cfg, const float *params, zg_dtype dtype);

#endif
