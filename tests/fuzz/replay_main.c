/* replay_main.c - runs a libFuzzer target's entry point over every file of a corpus directory,
 * so a plain build (and the ASan build) replays the seeds without libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_INPUT_BYTES_MAX (1u << 20)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *dir = opendir(argv[1]);
    if (dir == NULL) {
        fprintf(stderr, "%s: cannot open %s\n", argv[0], argv[1]);
        return 2;
    }
    uint8_t *buf = malloc(REPLAY_INPUT_BYTES_MAX);
    int files = 0;
    struct dirent *e;
    while (buf != NULL && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, REPLAY_INPUT_BYTES_MAX, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n); /* a crash or a sanitizer report fails the test */
        files++;
    }
    closedir(dir);
    free(buf);
    printf("%d inputs replayed from %s\n", files, argv[1]);
    return files > 0 ? 0 : 1; /* an empty corpus is a mistake */
}
