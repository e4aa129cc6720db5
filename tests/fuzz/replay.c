/* replay.c - runs a fuzz target over its seed corpus without libFuzzer (ctest: fuzz_replay_*). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every file of each directory given, as one input each; exits 0 if none crashed. */
int main(int argc, char **argv)
{
    size_t inputs = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            FILE *f = fopen(path, "rb");
            if (f == NULL)
                continue;
            static uint8_t buf[1 << 20];
            size_t n = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees overreads */
            if (copy == NULL)
                return 1;
            memcpy(copy, buf, n);
            LLVMFuzzerTestOneInput(copy, n);
            free(copy);
            inputs++;
        }
        closedir(d);
    }
    printf("replay: %zu inputs\n", inputs);
    return inputs > 0 ? 0 : 1;
}
