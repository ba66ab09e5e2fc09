/* Placeholder until the 'plan' command lands; replaced by its implementation. */
#include "cli/commands.h"
#include "core/error.h"

int zg_cmd_plan(int argc, char **argv) {
    (void)argc;
    (void)argv;
    zg_errorf("'zgpt plan' is not implemented in this build");
    zg_error_print();
    return 1;
}
