/* replay.c - runs a fuzz target's LLVMFuzzerTestOneInput on every file of its seed corpus. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Linked with one tests/fuzz/fuzz_*.c into replay_<target> (tests/fuzz/tests.cmake), so that
 * CTest, hence `make test`, replays tests/fuzz/corpus/<target>/ without libFuzzer or clang:
 * a seed that once crashed a target crashes (an assert, or ASan in the sanitizer build) here.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_FILE_BYTES_MAX (1u << 20)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (d == NULL) {
        perror(argv[1]);
        return 2;
    }
    static uint8_t buf[REPLAY_FILE_BYTES_MAX];
    size_t files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees overreads */
        if (copy == NULL)
            return 1;
        memcpy(copy, buf, n);
        LLVMFuzzerTestOneInput(copy, n);
        free(copy);
        files++;
    }
    closedir(d);
    printf("replayed %zu inputs from %s\n", files, argv[1]);
    return files > 0 ? 0 : 1;
}
