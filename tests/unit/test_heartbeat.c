/* The launcher's progress slots (src/dist/heartbeat.h): what workers publish is what the launcher
 * reads, per rank; the file goes away with the launcher; a worker outside zgpt's launcher attaches
 * nothing. */
#include "core/error.h"
#include "dist/heartbeat.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The launcher's progress slots: a worker's counts are visible to the launcher, per rank. */
static void test_heartbeat(void) {
    zg_heartbeat l, w0, w1;
    ZT_CHECK(zg_heartbeat_create(&l, 2) == 0);
    ZT_CHECK(setenv("ZGPT_HEARTBEAT", l.path, 1) == 0);
    ZT_CHECK(zg_heartbeat_attach(&w0, 0) == 0 && zg_heartbeat_attach(&w1, 1) == 0);
    zg_heartbeat_beat(&w0, 41);
    zg_heartbeat_beat(&w1, 40);
    ZT_CHECK(zg_heartbeat_count(&l, 0) == 41 && zg_heartbeat_count(&l, 1) == 40);
    ZT_CHECK(zg_heartbeat_pid(&l, 1) == getpid());
    ZT_CHECK(zg_heartbeat_attach(&w0, 5) == -1); /* no slot for rank 5 */
    zg_heartbeat_free(&w1);
    char *path = zg_strdup(l.path);
    zg_heartbeat_free(&l);
    ZT_CHECK(access(path, F_OK) != 0); /* the launcher removes its file */
    ZT_CHECK(unsetenv("ZGPT_HEARTBEAT") == 0 && zg_heartbeat_attach(&w0, 0) == 0 && w0.map == NULL);
    zg_heartbeat_beat(&w0, 1); /* not attached: nothing happens */
    free(path);
}

int main(void) {
    zt_run("heartbeat", test_heartbeat);
    return zt_finish();
}
