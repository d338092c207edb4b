#include "broker/amqp_table.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "protocol/protocol.h"

static json_t *value_to_json(const amqp_field_value_t *v, size_t depth, struct cw_error *err);

static json_t *bytes_to_json(amqp_bytes_t b)
{
	json_t *s = json_stringn(b.len ? (const char *)b.bytes : "", b.len);
	/* not UTF-8 (py-amqp would hand Python bytes): null, never a crash */
	return s ? s : json_null();
}

static json_t *array_to_json(const amqp_array_t *a, size_t depth, struct cw_error *err)
{
	json_t *out = json_array();
	for (int i = 0; out && i < a->num_entries; i++) {
		json_t *v = value_to_json(&a->entries[i], depth, err);
		if (!v || json_array_append_new(out, v)) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static json_t *table_to_json(const amqp_table_t *t, size_t depth, struct cw_error *err)
{
	json_t *out = json_object();
	for (int i = 0; out && i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];
		char key[256];
		if (e->key.len >= sizeof(key) || memchr(e->key.bytes, 0, e->key.len)) {
			cw_error_set(err, CW_EPROTO, "AMQP table key too long or not text");
			json_decref(out);
			return NULL;
		}
		memcpy(key, e->key.bytes, e->key.len);
		key[e->key.len] = '\0';
		json_t *v = value_to_json(&e->value, depth, err);
		if (!v) {
			json_decref(out);
			return NULL;
		}
		/* a key that is not UTF-8 cannot be a JSON key: dropped */
		json_object_set_new(out, key, v);
	}
	return out;
}

static json_t *value_to_json(const amqp_field_value_t *v, size_t depth, struct cw_error *err)
{
	char digits[32];

	if (depth == 0) {
		cw_error_set(err, CW_ELIMIT, "AMQP table nested too deeply");
		return NULL;
	}
	switch (v->kind) {
	case AMQP_FIELD_KIND_BOOLEAN:
		return json_boolean(v->value.boolean);
	case AMQP_FIELD_KIND_I8:
		return json_integer(v->value.i8);
	case AMQP_FIELD_KIND_U8:
		return json_integer(v->value.u8);
	case AMQP_FIELD_KIND_I16:
		return json_integer(v->value.i16);
	case AMQP_FIELD_KIND_U16:
		return json_integer(v->value.u16);
	case AMQP_FIELD_KIND_I32:
		return json_integer(v->value.i32);
	case AMQP_FIELD_KIND_U32:
		return json_integer(v->value.u32);
	case AMQP_FIELD_KIND_I64:
		return json_integer(v->value.i64);
	case AMQP_FIELD_KIND_U64:
	case AMQP_FIELD_KIND_TIMESTAMP:
		if (v->value.u64 <= INT64_MAX)
			return json_integer((json_int_t)v->value.u64);
		snprintf(digits, sizeof(digits), "%" PRIu64, v->value.u64);
		return cw_json_bigint(digits);
	case AMQP_FIELD_KIND_F32:
		return isfinite(v->value.f32) ? json_real(v->value.f32) : json_null();
	case AMQP_FIELD_KIND_F64:
		return isfinite(v->value.f64) ? json_real(v->value.f64) : json_null();
	case AMQP_FIELD_KIND_DECIMAL: {
		double d = (double)v->value.decimal.value;
		for (unsigned i = 0; i < v->value.decimal.decimals && i < 32; i++)
			d /= 10;
		return json_real(d);
	}
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		return bytes_to_json(v->value.bytes);
	case AMQP_FIELD_KIND_ARRAY:
		return array_to_json(&v->value.array, depth - 1, err);
	case AMQP_FIELD_KIND_TABLE:
		return table_to_json(&v->value.table, depth - 1, err);
	case AMQP_FIELD_KIND_VOID:
		return json_null();
	default:
		cw_error_set(err, CW_EPROTO, "AMQP field of unknown kind 0x%02x", (unsigned)v->kind);
		return NULL;
	}
}

json_t *cw_amqp_table_to_json(const amqp_table_t *t, size_t max_depth, struct cw_error *err)
{
	if (max_depth == 0) {
		cw_error_set(err, CW_ELIMIT, "AMQP table nested too deeply");
		return NULL;
	}
	json_t *out = table_to_json(t, max_depth, err);
	if (!out && err && !err->code)
		cw_error_set(err, CW_ENOMEM, "out of memory");
	return out;
}

/* ---- JSON -> AMQP ------------------------------------------------------ */

static int value_from_json(json_t *v, amqp_pool_t *pool, amqp_field_value_t *out,
			   struct cw_error *err);

static int bytes_dup(amqp_pool_t *pool, const char *s, size_t n, amqp_bytes_t *out)
{
	out->len = n;
	out->bytes = NULL;
	if (!n)
		return CW_OK;
	out->bytes = amqp_pool_alloc(pool, n);
	if (!out->bytes)
		return CW_ENOMEM;
	memcpy(out->bytes, s, n);
	return CW_OK;
}

static int value_from_json(json_t *v, amqp_pool_t *pool, amqp_field_value_t *out,
			   struct cw_error *err)
{
	memset(out, 0, sizeof(*out));
	if (cw_json_is_bigint(v)) {
		cw_error_set(err, CW_EINVAL, "integer beyond 64 bits has no AMQP form");
		return CW_EINVAL;
	}
	switch (json_typeof(v)) {
	case JSON_NULL:
		out->kind = AMQP_FIELD_KIND_VOID;
		return CW_OK;
	case JSON_TRUE:
	case JSON_FALSE:
		out->kind = AMQP_FIELD_KIND_BOOLEAN;
		out->value.boolean = json_is_true(v);
		return CW_OK;
	case JSON_INTEGER: {
		json_int_t i = json_integer_value(v);
		if (i >= INT32_MIN && i <= INT32_MAX) {
			out->kind = AMQP_FIELD_KIND_I32;
			out->value.i32 = (int32_t)i;
		} else {
			out->kind = AMQP_FIELD_KIND_I64;
			out->value.i64 = i;
		}
		return CW_OK;
	}
	case JSON_REAL:
		out->kind = AMQP_FIELD_KIND_F64;
		out->value.f64 = json_real_value(v);
		return CW_OK;
	case JSON_STRING:
		out->kind = AMQP_FIELD_KIND_UTF8;
		if (bytes_dup(pool, json_string_value(v), json_string_length(v), &out->value.bytes))
			goto nomem;
		return CW_OK;
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		out->kind = AMQP_FIELD_KIND_ARRAY;
		out->value.array.num_entries = (int)n;
		out->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t))
					     : NULL;
		if (n && !out->value.array.entries)
			goto nomem;
		for (size_t i = 0; i < n; i++) {
			int rc = value_from_json(json_array_get(v, i), pool,
						 &out->value.array.entries[i], err);
			if (rc)
				return rc;
		}
		return CW_OK;
	}
	case JSON_OBJECT:
		out->kind = AMQP_FIELD_KIND_TABLE;
		return cw_amqp_table_from_json(v, pool, &out->value.table, err);
	}
	cw_error_set(err, CW_EINVAL, "JSON value has no AMQP form");
	return CW_EINVAL;
nomem:
	cw_error_set(err, CW_ENOMEM, "out of memory");
	return CW_ENOMEM;
}

int cw_amqp_table_from_json(json_t *obj, amqp_pool_t *pool, amqp_table_t *t,
			    struct cw_error *err)
{
	const char *key;
	json_t *v;
	size_t n = json_object_size(obj), i = 0;

	t->num_entries = 0;
	t->entries = NULL;
	if (!json_is_object(obj) || !n)
		return json_is_object(obj) || json_is_null(obj) || !obj ? CW_OK : CW_EINVAL;
	t->entries = amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t));
	if (!t->entries) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	json_object_foreach(obj, key, v) {
		size_t klen = strlen(key);
		if (klen > 255) {
			cw_error_set(err, CW_EINVAL, "header name longer than 255 bytes");
			return CW_EINVAL;
		}
		if (bytes_dup(pool, key, klen, &t->entries[i].key)) {
			cw_error_set(err, CW_ENOMEM, "out of memory");
			return CW_ENOMEM;
		}
		int rc = value_from_json(v, pool, &t->entries[i].value, err);
		if (rc)
			return rc;
		i++;
	}
	t->num_entries = (int)i;
	return CW_OK;
}
