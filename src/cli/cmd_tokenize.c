/* Placeholder until the 'tokenize' command lands; replaced by its implementation. */
#include "cli/commands.h"
#include "core/error.h"

int zg_cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    zg_errorf("'zgpt tokenize' is not implemented in this build");
    zg_error_print();
    return 1;
}
