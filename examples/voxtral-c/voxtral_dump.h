/*
 * voxtral_dump.h - dump voxtral.c's intermediate tensors as .npy files for voxtral-oracle compare.
 *
 * Part of the voxtral-oracle example adapter (examples/voxtral-c); not part of upstream voxtral.c.
 * Tap names and layouts are those of the oracle's e2e golden case (golden/SPEC.md): rows x cols,
 * row-major, float32; `mel` is written as [128, T] (bins x frames), `dec.t_cond` as [dim],
 * `tokens` as int64.
 */
#ifndef VOXTRAL_DUMP_H
#define VOXTRAL_DUMP_H

extern int vox_dump_on;   /* 1 after vox_dump_init() succeeded */

#define VOX_DUMP_PAD 32  /* [STREAMING_PAD]: what the golden's tokens_in holds after an EOS */

/* dir: output directory (must exist). tokens_in: an int64 .npy of the golden's tokens_in, or NULL.
 * When dumping, decoding continues past EOS to the last position, so every float tap covers all N
 * positions. With tokens_in, every generated position p is fed tokens_in[p] (teacher forcing);
 * without, the port's own previous token, and STREAMING_PAD after its first EOS (the rule by which
 * the golden builds tokens_in from its own tokens). */
int vox_dump_init(const char *dir, const char *tokens_in);
/* Append n_rows rows of n_cols floats (row-major) to the tap `name`. */
void vox_dump_rows(const char *name, const float *rows, int n_rows, int n_cols);
/* Same with a printf-style name holding one integer (the layer index). */
void vox_dump_rows_layer(const char *fmt, int layer, const float *rows, int n_rows, int n_cols);
/* Append a column-major [dim, len] buffer as len rows of dim. */
void vox_dump_colmajor(const char *name, const float *buf, int dim, int len);
/* The token to embed at position pos: tokens_in[pos] when teacher forcing, else own (PAD after EOS). */
int vox_dump_fed_token(int pos, int own);
/* Check a prompt token against tokens_in (warns on stderr on a mismatch). */
void vox_dump_check_prompt(int pos, int token);
/* Record one generated token; tokens after the first EOS are not recorded (voxtral.c stops there). */
void vox_dump_token(int token, int eos);
/* 1 when decoding must continue past EOS (whenever dumping). */
int vox_dump_past_eos(void);
/* Front-end work: stop after adapter.out (the decoder never runs; compare with --only). */
void vox_dump_set_encoder_only(void);
int vox_dump_encoder_only(void);
/* Write every tap as DIR/<name>.npy. Returns 0 on success. */
int vox_dump_finish(void);

#endif
