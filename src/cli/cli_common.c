#include "cli/cli_common.h"

#include "core/error.h"

#include <stdio.h>
#include <string.h>

int zg_cli_parse(const zg_command_spec *spec, int argc, char **argv, void *args, zg_strlist *positional) {
    int rc = zg_options_parse(spec, argc, argv, args, positional);
    if (rc < 0) zg_error_print();
    return rc;
}

int zg_cli_fail(void) {
    zg_error_print();
    return 1;
}

int zg_cli_model_spec(const char *model, const char *revision, char *buf, size_t cap) {
    if (revision && strchr(model, '@'))
        return zg_errorf("--model %s already names a revision; drop --revision %s or the @ part", model, revision);
    int n = revision ? snprintf(buf, cap, "%s@%s", model, revision) : snprintf(buf, cap, "%s", model);
    if (n < 0 || (size_t)n >= cap) return zg_errorf("--model is too long (%zu characters at most)", cap - 1);
    return 0;
}
