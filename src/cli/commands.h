/* One entry point per subcommand, each defined in its own cmd_<name>.c. Each returns the process
 * exit status (0 ok, 1 error, 2 usage error) and prints its own errors. */
#ifndef ZG_CLI_COMMANDS_H
#define ZG_CLI_COMMANDS_H

int zg_cmd_prepare(int argc, char **argv);
int zg_cmd_train(int argc, char **argv);
int zg_cmd_eval(int argc, char **argv);
int zg_cmd_sample(int argc, char **argv);
int zg_cmd_export(int argc, char **argv);
int zg_cmd_tokenize(int argc, char **argv);
int zg_cmd_detokenize(int argc, char **argv);
int zg_cmd_bench(int argc, char **argv);
int zg_cmd_plan(int argc, char **argv);
int zg_cmd_download(int argc, char **argv);

/* Prints the version and every compiled-in backend and library (cmd_version.c). */
void zg_print_version(void);

#endif
