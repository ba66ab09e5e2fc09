/* The Hjson reader (src/core/hjson.c): strict JSON reads as cJSON reads it; each Hjson form reads as the
 * hjson reference parser reads it (the expected trees below are what `hjson -j` prints for the same
 * text); syntax errors name their line; deep nesting is an error, not a crash. */
#include "core/error.h"
#include "core/hjson.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *parse(const char *text, size_t *line) { return zg_hjson_parse(text, strlen(text), line); }

/* text reads as the tree cJSON makes of `json` */
static void check_same(const char *text, const char *json) {
    size_t line = 0;
    cJSON *a = parse(text, &line), *b = cJSON_Parse(json);
    ZT_CHECK_MSG(b != NULL, "bad expected JSON: %s", json);
    ZT_CHECK_MSG(a != NULL, "hjson refused (%s): %s", zg_error_message(), text);
    if (a && b) {
        char *pa = cJSON_PrintUnformatted(a);
        ZT_CHECK_MSG(cJSON_Compare(a, b, 1), "got %s, want %s, from: %s", pa, json, text);
        free(pa);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    zg_error_clear();
}

/* text is refused at `line` with a message holding `what` */
static void check_error(const char *text, size_t want_line, const char *what) {
    size_t line = 0;
    cJSON *a = parse(text, &line);
    ZT_CHECK_MSG(a == NULL, "accepted: %s", text);
    cJSON_Delete(a);
    ZT_CHECK_MSG(line == want_line && strstr(zg_error_message(), what), "line %zu (want %zu), message '%s' (want '%s')",
                 line, want_line, zg_error_message(), what);
    char at[32];
    snprintf(at, sizeof at, "line %zu:", want_line);
    ZT_CHECK_MSG(strstr(zg_error_message(), at) != NULL, "message without its line: %s", zg_error_message());
    zg_error_clear();
}

/* strict JSON: the same tree as cJSON's own parser */
static void test_strict_json(void) {
    const char *docs[] = {
        "{}",
        "[]",
        "{\"a\": 1, \"b\": [1, 2.5, -3e-2, 0, 1e9, true, false, null], \"c\": {\"d\": \"x\"}}",
        "{\"esc\": \"q\\\"b\\\\s\\/n\\n t\\t u\\u00e9 \\ud83d\\ude00 \\b\\f\\r\"}",
        "{\"train_batch_size\": 32, \"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 16},"
        " \"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": 5e8, \"offload_optimizer\": {\"device\": "
        "\"cpu\", \"pin_memory\": true}}}",
        "  \n\t{\"nested\": [[[{\"deep\": [\"v\"]}]]]}\n  ",
        "[1, \"two\", {\"three\": 3}]",
        "{\"utf8\": \"h\xc3\xa9llo\"}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) check_same(docs[i], docs[i]);
}

/* each Hjson form */
static void test_hjson_forms(void) {
    /* comments of the three kinds, anywhere between tokens */
    check_same("{\n  # hash\n  \"a\": 1, // slashes\n  /* block\n  over lines */ \"b\": /* inline */ 2\n}",
               "{\"a\": 1, \"b\": 2}");
    /* commas: optional at line ends, trailing ones ignored */
    check_same("{\n  \"a\": 1\n  \"b\": [1, 2, 3,],\n  \"c\": {\"d\": true,},\n}",
               "{\"a\":1,\"b\":[1,2,3],\"c\":{\"d\":true}}");
    check_same("[\n 1\n 2\n]", "[1,2]");
    /* keys without quotes, whitespace before the ':' */
    check_same("{train_batch_size: 8, zero_optimization: {stage : 3}}",
               "{\"train_batch_size\":8,\"zero_optimization\":{\"stage\":3}}");
    check_same("{ key-with.dots_and$: 1 }", "{\"key-with.dots_and$\":1}");
    /* quoteless strings: the rest of the line, trimmed; literals when the text reads as one */
    check_same("{\n  type: AdamW  \n  device: cpu\n  text: look, no quotes: {} []\n}",
               "{\"type\":\"AdamW\",\"device\":\"cpu\",\"text\":\"look, no quotes: {} []\"}");
    check_same("{\n a: 3 # rate\n b: 3 times\n c: true,\n d: null\n e: -1.5e3 // c\n f: 01\n g: -\n h: 1.\n}",
               "{\"a\":3,\"b\":\"3 times\",\"c\":true,\"d\":null,\"e\":-1500,\"f\":\"01\",\"g\":\"-\",\"h\":\"1.\"}");
    check_same("{a: 5, b: 6}", "{\"a\":5,\"b\":6}");
    check_same("{a: truex\n}", "{\"a\":\"truex\"}");
    check_same("{a: x # not a comment in a string\n}", "{\"a\":\"x # not a comment in a string\"}");
    /* 'single quotes' with \' and JSON's escapes */
    check_same("{'a': 'it\\'s \"q\"\\n'}", "{\"a\":\"it's \\\"q\\\"\\n\"}");
    /* '''multiline''': the opening column's indentation removed, the last line feed dropped */
    check_same("{\n  haiku:\n    '''\n    JSON I love you.\n      indented\n    last\n    '''\n}",
               "{\"haiku\":\"JSON I love you.\\n  indented\\nlast\"}");
    check_same("{a: '''one line'''}", "{\"a\":\"one line\"}");
    check_same("{a: '''it's '' two'''}", "{\"a\":\"it's '' two\"}");
    /* the top-level object without braces; a byte order mark; CRLF line ends */
    check_same("# ds_config\ntrain_batch_size: 16\nfp16: {enabled: true}\n",
               "{\"train_batch_size\":16,\"fp16\":{\"enabled\":true}}");
    check_same("\xEF\xBB\xBF{\"a\": 1}", "{\"a\":1}");
    check_same("{\r\n  a: x y\r\n  b: 2\r\n}\r\n", "{\"a\":\"x y\",\"b\":2}");
    /* duplicate keys stay, in order (the config validator reports them) */
    size_t line = 0;
    cJSON *d = parse("{seed: 1, seed: 2}", &line);
    ZT_CHECK(d && cJSON_GetArraySize(d) == 2 && cJSON_GetArrayItem(d, 1)->valuedouble == 2);
    cJSON_Delete(d);
}

static void test_errors(void) {
    check_error("{\"a\": 1", 1, "'{' from line 1 is not closed");
    check_error("{\n\"a\": [1,\n2\n", 4, "'[' from line 2 is not closed");
    check_error("{\n  \"a\": \"open\n}", 2, "not closed on its line");
    check_error("{\n  /* never closed\n", 3, "/* comment from line 2 is not closed");
    check_error("{\n  my key: 1\n}", 2, "whitespace in key 'my key'");
    check_error("{\n  \"a\" 1\n}", 2, "expected ':' after key 'a'");
    check_error("{\n  a:\n}", 3, "key 'a' has no value");
    check_error("{\"a\": \"\\q\"}", 1, "bad escape '\\q'");
    check_error("{\"a\": \"\\u12\"}", 1, "4 hex digits");
    check_error("{\"a\": \"\\u0000\"}", 1, "NUL");
    check_error("{\"a\": 1}\n}", 2, "after the end of the top-level object");
    check_error("{a: '''open\n", 2, "''' string from line 1 is not closed");
    check_error("{a: 1, : 2}", 1, "no key before it");
    check_error("{a: [1, }", 1, "found '}' where a value was expected");
    check_error("", 1, "no value");
    check_error("  # only a comment\n", 2, "no value");
    check_error("a: 1\n}\n", 2, "found '}' with no '{'");
}

/* a NUL inside the given length, deep nesting (an error, not a stack overflow) */
static void test_limits(void) {
    const char nul[] = "{\n\"a\": \"x\0y\"}";
    size_t line = 0;
    ZT_CHECK(zg_hjson_parse(nul, sizeof nul - 1, &line) == NULL && line == 2 && strstr(zg_error_message(), "NUL byte"));
    zg_error_clear();
    size_t n = 100000;
    char *deep = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        deep[i] = '[';
        deep[n + i] = ']';
    }
    deep[2 * n] = '\0';
    ZT_CHECK(zg_hjson_parse(deep, 2 * n, &line) == NULL && strstr(zg_error_message(), "nesting deeper"));
    zg_error_clear();
    /* at the limit it reads */
    size_t k = ZG_HJSON_MAX_DEPTH;
    for (size_t i = 0; i < k; i++) {
        deep[i] = '[';
        deep[k + i] = ']';
    }
    cJSON *ok = zg_hjson_parse(deep, 2 * k, &line);
    ZT_CHECK_MSG(ok != NULL, "%s", zg_error_message());
    cJSON_Delete(ok);
    free(deep);
}

int main(void) {
    zt_run("strict_json", test_strict_json);
    zt_run("hjson_forms", test_hjson_forms);
    zt_run("errors", test_errors);
    zt_run("limits", test_limits);
    return zt_finish();
}
