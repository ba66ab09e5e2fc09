#include "cli/cli_common.h"

#include "core/error.h"

int zg_cli_parse(const zg_command_spec *spec, int argc, char **argv, void *args, zg_strlist *positional) {
    int rc = zg_options_parse(spec, argc, argv, args, positional);
    if (rc < 0) zg_error_print();
    return rc;
}

int zg_cli_fail(void) {
    zg_error_print();
    return 1;
}
