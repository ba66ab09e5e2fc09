/* Placeholder until the 'export' command lands; replaced by its implementation. */
#include "cli/commands.h"
#include "core/error.h"

int zg_cmd_export(int argc, char **argv) {
    (void)argc;
    (void)argv;
    zg_errorf("'zgpt export' is not implemented in this build");
    zg_error_print();
    return 1;
}
