/* Placeholder until the 'eval' command lands; replaced by its implementation. */
#include "cli/commands.h"
#include "core/error.h"

int zg_cmd_eval(int argc, char **argv) {
    (void)argc;
    (void)argv;
    zg_errorf("'zgpt eval' is not implemented in this build");
    zg_error_print();
    return 1;
}
