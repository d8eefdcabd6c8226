/* The spawn floor: `workers` threads that each posix_spawn `/bin/sh -c CMD` and
 * waitpid it until `tasks` commands have run; prints tasks per second. Nothing else
 * a task runner does (no staging, no files, no bookkeeping): the least a runner of
 * shell tasks can cost on this machine.
 *
 * Usage: spawn TASKS WORKERS [CMD]   (CMD defaults to `true`) */
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;
static atomic_long next;
static long tasks;
static char *command = "true";

static void *worker(void *unused) {
    (void)unused;
    char *argv[] = {"/bin/sh", "-c", command, NULL};
    while (atomic_fetch_add(&next, 1) < tasks) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0) {
            perror("posix_spawn");
            exit(1);
        }
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "a command failed\n");
            exit(1);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn TASKS WORKERS [CMD]\n");
        return 2;
    }
    tasks = atol(argv[1]);
    int workers = atoi(argv[2]);
    if (argc > 3)
        command = argv[3];
    pthread_t threads[64];
    if (workers < 1 || workers > 64)
        return 2;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < workers; i++)
        pthread_create(&threads[i], NULL, worker, NULL);
    for (int i = 0; i < workers; i++)
        pthread_join(threads[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("%.1f\n", tasks / seconds);
    return 0;
}
