/*
 * A tiny in-container probe for the Docker adapter's integration tests,
 * built static into a FROM-scratch image. The first argument picks what it
 * does; the image's default is `serve`.
 *
 *   serve              print "ready" (stdout) and "warming up" (stderr), then
 *                      "tick N" every half second; exit 0 on SIGTERM
 *   exit MS CODE       wait MS milliseconds, then exit with CODE
 *   exec-probe CODE    print to stdout and stderr, exit with CODE (for exec)
 *   sleep SECONDS      sleep, exit 0
 *   hog                allocate and touch memory until the kernel stops it
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "serve";
    setvbuf(stdout, NULL, _IONBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);

    if (strcmp(mode, "serve") == 0) {
        /* PID 1 ignores SIGTERM unless it installs a handler. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGTERM, &sa, NULL);
        printf("ready\n");
        fprintf(stderr, "warming up\n");
        for (int n = 1; !stopping; n++) {
            sleep_ms(500);
            if (!stopping) printf("tick %d\n", n);
        }
        printf("bye\n");
        return 0;
    }
    if (strcmp(mode, "exit") == 0 && argc > 3) {
        sleep_ms(atol(argv[2]));
        printf("exiting with %s\n", argv[3]);
        return atoi(argv[3]);
    }
    if (strcmp(mode, "exec-probe") == 0 && argc > 2) {
        printf("probe-out\n");
        fprintf(stderr, "probe-err\n");
        return atoi(argv[2]);
    }
    if (strcmp(mode, "sleep") == 0 && argc > 2) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    if (strcmp(mode, "hog") == 0) {
        for (;;) {
            char *p = malloc(1 << 20);
            if (p == NULL) {
                sleep_ms(1);
                continue;
            }
            memset(p, 1, 1 << 20);
        }
    }
    fprintf(stderr, "probe: unknown mode %s\n", mode);
    return 64;
}
