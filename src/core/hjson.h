/* Config files as DeepSpeed reads them: Hjson (https://hjson.github.io/syntax.html), a superset of JSON.
 * DeepSpeed loads its config with the hjson package, so a ds_config.json that trains under DeepSpeed may
 * hold what strict JSON refuses:
 *   - comments: # and // to the end of the line, and block comments;
 *   - commas: optional at the end of a line, and a trailing comma before } or ] is ignored;
 *   - keys without quotes (no whitespace and none of , : [ ] { } in them);
 *   - strings without quotes: the rest of the line, trimmed, unless it reads as true, false, null or a
 *     number (then that, as a JSON value; a comment or a , } ] may follow it on the line);
 *   - 'single-quoted' strings (JSON's escapes, and \' ), and '''multiline''' strings (the indentation
 *     of the opening ''' removed from each line, the last line feed dropped);
 *   - no braces around the top-level object.
 * Strict JSON reads as before (the same values). Duplicate keys stay in the tree in file order (the
 * config validator reports them). */
#ifndef ZG_CORE_HJSON_H
#define ZG_CORE_HJSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* Parses text[0, len) into a cJSON tree (the caller cJSON_Delete()s it). NULL on a syntax error, with a
 * zg_errorf() message "line L: what was found and what to do" and *err_line = L (when err_line is not
 * NULL). Nesting deeper than ZG_HJSON_MAX_DEPTH is an error, not a crash. */
#define ZG_HJSON_MAX_DEPTH 200
cJSON *zg_hjson_parse(const char *text, size_t len, size_t *err_line);

#endif
