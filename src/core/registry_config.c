/* registry_config.c - the registry's limits: defaults, ceilings, validation, by name (pure). */
#include "core/registry.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

keel_reg_config_t keel_reg_config_default(void)
{
    return (keel_reg_config_t){
        .services_max = 1024,
        .instances_per_service_max = 1024,
        .instances_max = 65536,
        .tags_max = 64,
        .tag_bytes_max = 256,
        .meta_bytes_max = 4096,
        .meta_pairs_max = 64,
        .name_bytes_max = 256,
        .address_bytes_max = 256,
        .output_bytes_max = 4096,
        .ttl_ms_max = 24ull * 3600 * 1000,
        .threshold_max = 100,
    };
}

keel_reg_config_t keel_reg_config_ceiling(void)
{
    return (keel_reg_config_t){
        .services_max = KEEL_REG_SERVICES_CEILING,
        .instances_per_service_max = KEEL_REG_INSTANCES_CEILING,
        .instances_max = KEEL_REG_INSTANCES_CEILING,
        .tags_max = KEEL_REG_TAGS_CEILING,
        .tag_bytes_max = KEEL_REG_NAME_BYTES_CEILING,
        .meta_bytes_max = KEEL_REG_META_BYTES_CEILING,
        .meta_pairs_max = KEEL_REG_META_PAIRS_CEILING,
        .name_bytes_max = KEEL_REG_NAME_BYTES_CEILING,
        .address_bytes_max = KEEL_REG_ADDRESS_BYTES_CEILING,
        .output_bytes_max = KEEL_REG_OUTPUT_BYTES_CEILING,
        .ttl_ms_max = INT64_MAX / 4,
        .threshold_max = KEEL_REG_THRESHOLD_CEILING,
    };
}

/* The limits by name: one row each, in the order every encoding of them uses. */
#define LIMIT_ROW(name, field)                                                                     \
    {                                                                                              \
        name, offsetof(keel_reg_config_t, field), sizeof(((keel_reg_config_t *)0)->field)          \
    }
static const struct {
    const char *name;
    size_t offset, size;
} LIMITS[KEEL_REG_LIMITS_COUNT] = {
    LIMIT_ROW("services_max", services_max),
    LIMIT_ROW("instances_per_service_max", instances_per_service_max),
    LIMIT_ROW("instances_max", instances_max),
    LIMIT_ROW("tags_max", tags_max),
    LIMIT_ROW("tag_bytes_max", tag_bytes_max),
    LIMIT_ROW("meta_bytes_max", meta_bytes_max),
    LIMIT_ROW("meta_pairs_max", meta_pairs_max),
    LIMIT_ROW("name_bytes_max", name_bytes_max),
    LIMIT_ROW("address_bytes_max", address_bytes_max),
    LIMIT_ROW("output_bytes_max", output_bytes_max),
    LIMIT_ROW("ttl_ms_max", ttl_ms_max),
    LIMIT_ROW("threshold_max", threshold_max),
};

const char *keel_reg_limit_name(size_t i)
{
    assert(i < KEEL_REG_LIMITS_COUNT);
    return LIMITS[i].name;
}

uint64_t keel_reg_limit_get(const keel_reg_config_t *cfg, size_t i)
{
    assert(i < KEEL_REG_LIMITS_COUNT);
    const char *f = (const char *)cfg + LIMITS[i].offset;
    if (LIMITS[i].size == sizeof(uint32_t)) {
        uint32_t v;
        memcpy(&v, f, sizeof(v));
        return v;
    }
    uint64_t v;
    assert(LIMITS[i].size == sizeof(v));
    memcpy(&v, f, sizeof(v));
    return v;
}

void keel_reg_limit_set(keel_reg_config_t *cfg, size_t i, uint64_t v)
{
    assert(i < KEEL_REG_LIMITS_COUNT);
    char *f = (char *)cfg + LIMITS[i].offset;
    if (LIMITS[i].size == sizeof(uint32_t)) {
        uint32_t w = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        memcpy(f, &w, sizeof(w));
    } else {
        memcpy(f, &v, sizeof(v));
    }
}

int keel_reg_limit_find(const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++) {
        const char *w = LIMITS[i].name;
        size_t k = 0;
        for (; k < len && w[k] != '\0'; k++) {
            int ch = name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32
                     : name[k] == '-'                 ? '_'
                                                      : name[k];
            if (ch != w[k])
                break;
        }
        if (k == len && w[k] == '\0')
            return (int)i;
    }
    return -1;
}

int keel_reg_config_equal(const keel_reg_config_t *a, const keel_reg_config_t *b)
{
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++)
        if (keel_reg_limit_get(a, i) != keel_reg_limit_get(b, i))
            return 0;
    return 1;
}

int keel_reg_config_validate(const keel_reg_config_t *c, keel_errmsg_t *msg)
{
    if (c->services_max < 1 || c->instances_per_service_max < 1 || c->instances_max < 1)
        return keel_errf(msg, KEEL_EINVAL, "registry: counts must be at least 1");
    if (c->services_max > KEEL_REG_SERVICES_CEILING ||
        c->instances_per_service_max > KEEL_REG_INSTANCES_CEILING ||
        c->instances_max > KEEL_REG_INSTANCES_CEILING)
        return keel_errf(msg, KEEL_EINVAL, "registry: a count limit is over its ceiling");
    if (c->tags_max > KEEL_REG_TAGS_CEILING || c->tag_bytes_max > KEEL_REG_NAME_BYTES_CEILING ||
        c->meta_bytes_max > KEEL_REG_META_BYTES_CEILING ||
        c->meta_pairs_max > KEEL_REG_META_PAIRS_CEILING ||
        c->name_bytes_max > KEEL_REG_NAME_BYTES_CEILING || c->name_bytes_max < 1 ||
        c->address_bytes_max > KEEL_REG_ADDRESS_BYTES_CEILING ||
        c->output_bytes_max > KEEL_REG_OUTPUT_BYTES_CEILING)
        return keel_errf(msg, KEEL_EINVAL, "registry: a size limit is over its ceiling");
    if (c->threshold_max < 1 || c->threshold_max > KEEL_REG_THRESHOLD_CEILING ||
        c->ttl_ms_max < 1 || c->ttl_ms_max > INT64_MAX / 4)
        return keel_errf(msg, KEEL_EINVAL, "registry: threshold_max or ttl_ms_max out of range");
    return 0;
}
