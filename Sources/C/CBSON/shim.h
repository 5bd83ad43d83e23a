#include <bson/bson.h>

/* bson_t and bson_iter_t are over-aligned structs that Swift imports as opaque
 * pointers, so they are allocated here. Each pair is freed with bson_free. */
static inline bson_t *ct_bson_static_new(const uint8_t *data, size_t len) {
    bson_t *b = (bson_t *) bson_malloc(sizeof(bson_t));
    if (!bson_init_static(b, data, len)) { bson_free(b); return NULL; }
    return b;
}
static inline bson_iter_t *ct_iter_new(void) { return (bson_iter_t *) bson_malloc0(sizeof(bson_iter_t)); }
static inline uint32_t ct_bson_len(const bson_t *b) { return b->len; }
/* An out-parameter bson_t (libmongoc replies, cursor documents copied out). */
static inline bson_t *ct_reply_new(void) { bson_t *b = (bson_t *) bson_malloc0(sizeof(bson_t)); bson_init(b); return b; }
static inline void ct_reply_free(bson_t *b) { bson_destroy(b); bson_free(b); }
