/* Monitors and hub helpers: CRC32C and its mask, TFRecord framing, the Event protobuf bytes, SHA-256,
 * the progress line, repo ids and cache folder names. */
#include "core/progress.h"
#include "core/sha256.h"
#include "hub/hub_cache.h"
#include "monitor/tb_events.h"
#include "monitor/tfrecord.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_crc32c(void) {
    /* the CRC-32C check value (RFC 3720 and every CRC catalogue) */
    ZT_CHECK(zg_crc32c(0, "123456789", 9) == 0xE3069283u);
    ZT_CHECK(zg_crc32c(0, "", 0) == 0);
    /* 32 zero bytes: RFC 3720 B.4 */
    uint8_t z[32] = {0};
    ZT_CHECK(zg_crc32c(0, z, 32) == 0x8A9136AAu);
    /* streaming equals one call */
    ZT_CHECK(zg_crc32c(zg_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
    /* mask: rotate right 15, add 0xa282ead8 */
    ZT_CHECK(zg_crc32c_mask(0) == 0xa282ead8u);
    ZT_CHECK(zg_crc32c_mask(0x00008000u) == 0xa282ead9u);
}

static void test_tfrecord(void) {
    uint8_t h[12], f[4];
    zg_tfrecord_frame(h, f, "abc", 3);
    ZT_CHECK(h[0] == 3 && h[1] == 0 && h[7] == 0);
    uint32_t hc = (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
    uint32_t fc = (uint32_t)f[0] | (uint32_t)f[1] << 8 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 24;
    ZT_CHECK(hc == zg_crc32c_mask(zg_crc32c(0, h, 8)));
    ZT_CHECK(fc == zg_crc32c_mask(zg_crc32c(0, "abc", 3)));
}

static void test_event_bytes(void) {
    zg_pb_buf b;
    zg_pb_buf_init(&b);
    /* Event{wall_time=1.0, step=3, summary{value{tag="a", simple_value=2.0}}}, encoded by hand:
     * 09 <double 1.0> 10 03 2a 0a (Summary) 0a 08 (Value) 0a 01 'a' 15 <float 2.0> */
    zg_tb_event_scalar(&b, 1.0, 3, "a", 2.0f);
    static const uint8_t want[] = {0x09, 0,    0,    0,    0,    0,   0,    0xf0, 0x3f, 0x10, 0x03, 0x2a,
                                   0x0a, 0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0,    0,    0,    0x40};
    ZT_CHECK_MSG(b.len == sizeof want && memcmp(b.data, want, sizeof want) == 0, "scalar event: %zu bytes", b.len);
    /* file_version at step 0: the step field is omitted (proto3 default) */
    zg_tb_event_file_version(&b, 1.0);
    static const uint8_t fv[] = {0x09, 0,   0,   0,   0,   0,   0,   0xf0, 0x3f, 0x1a, 13,  'b',
                                 'r',  'a', 'i', 'n', '.', 'E', 'v', 'e',  'n',  't',  ':', '2'};
    ZT_CHECK(b.len == sizeof fv && memcmp(b.data, fv, sizeof fv) == 0);
    /* a multi-byte varint step (300 = ac 02) */
    zg_tb_event_scalar(&b, 1.0, 300, "a", 2.0f);
    ZT_CHECK(b.data[9] == 0x10 && b.data[10] == 0xac && b.data[11] == 0x02);
    /* text: DT_STRING tensor with the text plugin */
    zg_tb_event_text(&b, 1.0, 0, "config", "hi");
    int has_plugin = 0, has_dtype = 0;
    for (size_t i = 0; i + 6 <= b.len; i++) {
        if (memcmp(b.data + i, "\x0a\x04text", 6) == 0) has_plugin = 1;
        if (b.data[i] == 0x08 && b.data[i + 1] == 0x07) has_dtype = 1;
    }
    ZT_CHECK(has_plugin && has_dtype);
    zg_pb_buf_free(&b);
}

static void test_sha256(void) {
    char hex[65];
    zg_sha256 s;
    zg_sha256_init(&s);
    zg_sha256_final_hex(&s, hex);
    ZT_CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    zg_sha256_init(&s);
    zg_sha256_update(&s, "abc", 3);
    zg_sha256_final_hex(&s, hex);
    ZT_CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    /* two blocks (FIPS 180-2 example), fed in odd pieces */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    zg_sha256_init(&s);
    for (size_t i = 0; i < strlen(m); i += 7) zg_sha256_update(&s, m + i, strlen(m) - i < 7 ? strlen(m) - i : 7);
    zg_sha256_final_hex(&s, hex);
    ZT_CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    /* one million 'a' */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    zg_sha256_init(&s);
    zg_sha256_update(&s, a, 1000000);
    zg_sha256_final_hex(&s, hex);
    free(a);
    ZT_CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

static void test_progress(void) {
    zg_progress p;
    zg_progress_init(&p, "copy", 4 << 20, NULL);
    zg_progress_set_base(&p, 1 << 20);
    p.done = 2 << 20;
    char line[256];
    /* 1 MiB new in 1 s: 1 MiB/s, 2 MiB left: 2 s */
    zg_progress_format(&p, p.t0 + 1.0, line, sizeof line);
    ZT_CHECK_MSG(strcmp(line, "copy: 2.00 MiB / 4.00 MiB (50%), 1.00 MiB/s, ETA 2s") == 0, "%s", line);
    zg_progress_free(&p);
    zg_progress_init(&p, "encode", 0, "tokens");
    p.done = 3000000;
    zg_progress_format(&p, p.t0 + 2.0, line, sizeof line);
    ZT_CHECK_MSG(strcmp(line, "encode: 3.00M tokens, 1.50M tokens/s") == 0, "%s", line);
    zg_progress_free(&p);
    char d[32];
    ZT_CHECK(strcmp(zg_fmt_duration(59.4, d, sizeof d), "59s") == 0);
    ZT_CHECK(strcmp(zg_fmt_duration(725, d, sizeof d), "12m05s") == 0);
    ZT_CHECK(strcmp(zg_fmt_duration(3 * 3600 + 4 * 60 + 10, d, sizeof d), "3h04m") == 0);
}

static void test_hub_names(void) {
    ZT_CHECK(zg_hub_is_repo_id("openai-community/gpt2-xl"));
    ZT_CHECK(zg_hub_is_repo_id("org/name.v1_2"));
    ZT_CHECK(!zg_hub_is_repo_id("gpt2"));
    ZT_CHECK(!zg_hub_is_repo_id("a/b/c"));
    ZT_CHECK(!zg_hub_is_repo_id("../x"));
    ZT_CHECK(!zg_hub_is_repo_id("org/.."));
    ZT_CHECK(!zg_hub_is_repo_id("org/a..b"));
    ZT_CHECK(!zg_hub_is_repo_id("/abs"));
    ZT_CHECK(zg_hub_is_commit("0123456789abcdef0123456789abcdef01234567"));
    ZT_CHECK(!zg_hub_is_commit("main"));
    char *f = zg_hub_repo_folder("/c", "openai-community/gpt2");
    ZT_CHECK(strcmp(f, "/c/models--openai-community--gpt2") == 0);
    free(f);
    f = zg_hub_repo_folder("/c", "gpt2");
    ZT_CHECK(strcmp(f, "/c/models--gpt2") == 0);
    free(f);
    /* the cache folder's sources, in order */
    setenv("HOME", "/h", 1);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    const char *from;
    f = zg_hub_cache_dir(&from);
    ZT_CHECK(strcmp(f, "/h/.cache/huggingface/hub") == 0 && strcmp(from, "HOME") == 0);
    free(f);
    setenv("XDG_CACHE_HOME", "/x", 1);
    f = zg_hub_cache_dir(&from);
    ZT_CHECK(strcmp(f, "/x/huggingface/hub") == 0);
    free(f);
    setenv("HF_HOME", "/hf", 1);
    f = zg_hub_cache_dir(&from);
    ZT_CHECK(strcmp(f, "/hf/hub") == 0);
    free(f);
    setenv("HF_HUB_CACHE", "/hc", 1);
    f = zg_hub_cache_dir(&from);
    ZT_CHECK(strcmp(f, "/hc") == 0 && strcmp(from, "HF_HUB_CACHE") == 0);
    free(f);
    setenv("HF_HUB_OFFLINE", "1", 1);
    ZT_CHECK(zg_hub_offline());
    setenv("HF_HUB_OFFLINE", "0", 1);
    ZT_CHECK(!zg_hub_offline());
}

int main(void) {
    zt_run("crc32c", test_crc32c);
    zt_run("tfrecord", test_tfrecord);
    zt_run("event_bytes", test_event_bytes);
    zt_run("sha256", test_sha256);
    zt_run("progress", test_progress);
    zt_run("hub_names", test_hub_names);
    return zt_finish();
}
