/* Placeholder until the 'detokenize' command lands; replaced by its implementation. */
#include "cli/commands.h"
#include "core/error.h"

int zg_cmd_detokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    zg_errorf("'zgpt detokenize' is not implemented in this build");
    zg_error_print();
    return 1;
}
