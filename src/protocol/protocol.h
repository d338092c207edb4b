/*
 * Celery/kombu wire formats: pure functions, no I/O, clock, globals or
 * logging.  Everything here is fed bytes from the network and is fuzzed.
 *
 *  - cw_json_*: JSON with integers outside int64 preserved exactly.
 *  - kombu Redis envelope: {"body": b64, "content-type", "headers", "properties"}.
 *  - Celery task message protocol v2 (headers + [args, kwargs, embed]) and v1
 *    (everything in a body dict), decoded into one struct cw_request.
 *  - Result meta ({"status", "result", "traceback", "children", "date_done",
 *    "task_id", ...}) as Celery's Redis backend stores it.
 */
#ifndef CW_PROTOCOL_H
#define CW_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "util/err.h"

/* Hard caps on hostile input; callers may lower them. */
struct cw_proto_limits {
	size_t max_message;  /* bytes of one envelope (default 64 MiB) */
	size_t max_depth;    /* JSON nesting (default 512) */
};
#define CW_PROTO_LIMITS_DEFAULT {64u << 20, 512}

/* ---- JSON with big integers --------------------------------------- */

/*
 * Parse JSON text.  Integers that do not fit int64 become "bigint" values
 * (see cw_json_is_bigint) which cw_json_dumps writes back digit for digit.
 * Accepts NUL in strings.  Returns a new reference or NULL with *err set
 * (CW_EDECODE, CW_ELIMIT, CW_ENOMEM).
 */
json_t *cw_json_loads(const char *buf, size_t len, const struct cw_proto_limits *lim,
		      struct cw_error *err);
/* Compact JSON text, malloc'd and NUL-terminated; *len excludes the NUL. NULL on ENOMEM. */
char *cw_json_dumps(const json_t *v, size_t *len);
bool cw_json_is_bigint(const json_t *v);
/* New bigint value from decimal digits (optional leading '-'); NULL if not digits. */
json_t *cw_json_bigint(const char *digits);

/* ---- base64 ---------------------------------------------------------- */

/* Standard alphabet with padding; ignores nothing.  out must hold len/4*3 bytes. */
int cw_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);
/* malloc'd, NUL-terminated. */
char *cw_base64_encode(const unsigned char *in, size_t len, size_t *out_len);

/* ---- kombu Redis envelope ------------------------------------------- */

/*
 * The protocol-2 headers the consumer reads, each string NULL when absent or
 * null.  Read from the tree (cw_proto_decode_request) or, for an envelope
 * the scanner took, straight from the text (struct cw_envelope.task).
 */
struct cw_task_headers {
	const char *id, *task, *root_id, *parent_id, *group, *shadow, *origin, *eta, *expires,
		*argsrepr, *kwargsrepr;
	int64_t retries;        /* 0 when absent */
	int64_t group_index;    /* -1 when absent */
	double time_limit, soft_time_limit; /* timelimit [hard, soft]; 0 = none */
	bool ignore_result;
};

/*
 * Its string fields by number, in the order they are checked (and in which
 * struct cw_request lists them): the header's name and where it goes.
 */
enum { CW_TH_ID, CW_TH_TASK, CW_TH_ROOT_ID, CW_TH_PARENT_ID, CW_TH_GROUP, CW_TH_SHADOW,
       CW_TH_ORIGIN, CW_TH_ETA, CW_TH_EXPIRES, CW_TH_ARGSREPR, CW_TH_KWARGSREPR, CW_TH_NSTR };
extern const struct cw_task_header_str {
	const char *name;
	size_t offset;
} cw_task_header_strs[CW_TH_NSTR];

static inline const char **cw_task_header_slot(struct cw_task_headers *th, int i)
{
	return (const char **)(void *)((char *)th + cw_task_header_strs[i].offset);
}

struct cw_envelope {
	json_t *root;                 /* owns the strings below; NULL when scanned */
	struct cw_task_headers *task; /* scanned (cw_proto_decode_task_envelope): its headers
					 and, after them, the strings below; else NULL */
	const char *content_type;     /* "application/json", never NULL after decode */
	const char *content_encoding; /* "utf-8" or "binary"; never NULL */
	json_t *headers;              /* object; empty object when absent/null; NULL when scanned */
	json_t *properties;           /* object; empty object when absent; NULL when scanned */
	const char *delivery_tag;     /* properties.delivery_tag; NULL if absent */
	const char *exchange;         /* delivery_info.exchange; "" if absent */
	const char *routing_key;      /* delivery_info.routing_key; "" if absent */
	const char *correlation_id;   /* may be NULL */
	const char *reply_to;         /* may be NULL */
	int priority;                 /* properties.priority, 0 if absent */
	bool redelivered;             /* delivery_info.redelivered or headers.redelivered */
	unsigned char *body;          /* malloc'd payload bytes (base64-decoded if
					 body_encoding == "base64"), NUL-terminated */
	size_t body_len;
};

/*
 * Decode a Redis-list item.  CW_EFORMAT when it is not a JSON object with a
 * string "body" (garbage on the queue), CW_EDECODE for bad base64.
 * On failure *env is cleared (safe to cw_envelope_clear again).
 */
int cw_proto_decode_envelope(const char *buf, size_t len, const struct cw_proto_limits *lim,
			     struct cw_envelope *env, struct cw_error *err) CW_MUST_CHECK;
/*
 * The same from parts a transport has already taken apart (AMQP: the
 * properties as an envelope object, the payload bytes): no text is parsed.
 * Takes root and body (malloc'd, body_len + 1 bytes; NUL-terminated here)
 * whatever the outcome.  The envelope reads exactly as if root, with the
 * body in it, had been encoded and decoded.
 */
int cw_proto_adopt_envelope(json_t *root, unsigned char *body, size_t body_len,
			    struct cw_envelope *env, struct cw_error *err) CW_MUST_CHECK;
/*
 * The same for an item of a task queue, without building a tree when it can:
 * a protocol-2 task envelope whose strings are plain printable ASCII (no
 * escapes), without duplicate or oddly typed fields the consumer reads, is
 * read in one pass (env->task set, root/headers/properties NULL).  Anything
 * else goes through cw_proto_decode_envelope, so every input decodes, or
 * fails, exactly as it does there.
 */
int cw_proto_decode_task_envelope(const char *buf, size_t len, const struct cw_proto_limits *lim,
				  struct cw_envelope *env, struct cw_error *err) CW_MUST_CHECK;
void cw_envelope_clear(struct cw_envelope *env);

/* ---- task messages --------------------------------------------------- */

struct cw_request {
	int proto;              /* 1 or 2 */
	char *id;               /* task id (required) */
	char *task;             /* task name (required) */
	char *root_id, *parent_id, *group, *shadow, *origin;
	char *eta, *expires;    /* ISO-8601 strings as sent, or NULL */
	char *argsrepr, *kwargsrepr;
	char *reply_to, *correlation_id;
	int64_t retries;
	int64_t group_index;    /* -1 when absent */
	double time_limit;      /* hard, seconds; 0 = none (timelimit[0]) */
	double soft_time_limit; /* soft, seconds; 0 = none (timelimit[1]) */
	bool ignore_result;
	bool utc;               /* v1 "utc" flag; true for v2 */
	json_t *args;           /* array (owned) */
	json_t *kwargs;         /* object (owned) */
	json_t *embed;          /* object {callbacks, errbacks, chain, chord} (owned) */
};

/*
 * Cheap first step, matching Celery's consumer: the task name and id from
 * headers (v2) or from the decoded body (v1), so an unknown task can be
 * reported before its arguments are decoded.  *name and *id are set to
 * malloc'd copies: the caller frees both.
 * CW_EFORMAT if neither v2 headers nor a v1 body dict with "task" exist;
 * CW_ECONTENT/CW_EDECODE when a v1 body cannot be decoded.
 */
int cw_proto_peek_task(const struct cw_envelope *env, const struct cw_proto_limits *lim,
		       char **name, char **id, struct cw_error *err) CW_MUST_CHECK;

/*
 * Full decode into *req.  Only application/json bodies are accepted
 * (CW_ECONTENT otherwise, like Celery with accept_content=['json']);
 * CW_EDECODE for broken JSON, CW_EINVALTASK for wrong shapes (args not a
 * list, kwargs not a mapping, missing id).  On failure *req is cleared.
 */
int cw_proto_decode_request(const struct cw_envelope *env, const struct cw_proto_limits *lim,
			    struct cw_request *req, struct cw_error *err) CW_MUST_CHECK;
void cw_request_clear(struct cw_request *req);
/*
 * The master hands a child the request it decoded (fields, priority, the
 * decoded body) instead of the envelope to decode again: cw_request_pack
 * returns a malloc'd buffer (NULL on ENOMEM), cw_request_unpack rebuilds the
 * request, parsing only the body for args, kwargs and embed.  Both ends are
 * one build of this program on one machine (host byte order).
 */
char *cw_request_pack(const struct cw_request *req, int priority, const unsigned char *body,
		      size_t blen, size_t *len);
int cw_request_unpack(const char *buf, size_t len, const struct cw_proto_limits *lim,
		      struct cw_request *req, int *priority, struct cw_error *err) CW_MUST_CHECK;

/*
 * Parse an ISO-8601 timestamp as Celery sends it ("2026-11-24T11:40:04.123456+00:00",
 * with or without offset/fraction).  Naive times are UTC when utc is true.
 * Returns seconds since the epoch (UTC) in *out.
 */
int cw_proto_parse_iso8601(const char *s, bool utc, double *out) CW_MUST_CHECK;
/* Format like Python's datetime.utcnow().isoformat(): "YYYY-MM-DDTHH:MM:SS.ffffff" (naive UTC). */
void cw_proto_format_iso8601(double epoch, char out[32]);

/* ---- results ---------------------------------------------------------- */

enum cw_state {
	CW_STATE_PENDING, CW_STATE_RECEIVED, CW_STATE_STARTED, CW_STATE_SUCCESS,
	CW_STATE_FAILURE, CW_STATE_RETRY, CW_STATE_REVOKED, CW_STATE_REJECTED,
};
const char *cw_state_name(enum cw_state s);

struct cw_result_meta {
	enum cw_state state;
	const char *custom_state;  /* update_state("PROGRESS", ...): stored instead of state (not ready) */
	const char *task_id;
	json_t *result;          /* success value (borrowed; NULL = null) */
	const char *exc_type;    /* failure/revoked: exception class name */
	const char *exc_module;  /* "builtins", "celery.exceptions", ... */
	const char *exc_message; /* becomes exc_message: [message] */
	json_t *exc_args;        /* when set: exc_message is this array instead (borrowed) */
	const char *traceback;   /* NULL = null */
	double date_done;        /* epoch seconds; used for ready states */
	const char *group_id, *parent_id;  /* added when non-NULL */
	/* result_extended: added when extended is true */
	bool extended;
	const char *name, *worker, *queue;
	json_t *args, *kwargs;   /* borrowed */
	int64_t retries;
	/* rpc:// backend: where the client waits (not part of the stored dict) */
	const char *reply_to, *correlation_id;
};

/*
 * JSON text of the meta dict, exactly as Celery's Redis backend stores it:
 * status, result (value, or {"exc_type","exc_message":[msg],"exc_module"}),
 * traceback, children ([]), date_done (isoformat, null when not ready),
 * [group_id], [parent_id], [name,args,kwargs,worker,retries,queue], task_id.
 * malloc'd; NULL on ENOMEM.
 */
char *cw_proto_encode_result_meta(const struct cw_result_meta *m, size_t *len);
/* The status text of m: its custom state, else the name of its state. */
const char *cw_result_status(const struct cw_result_meta *m);
/* SUCCESS, FAILURE, REVOKED: the states Celery counts as ready (date_done set). */
bool cw_result_ready(const struct cw_result_meta *m);

/* ---- building task messages (callbacks, chains, chord bodies) ---------- */

/* A task message to publish; strings and values are borrowed. */
struct cw_task_msg {
	const char *task, *id;           /* required */
	json_t *args, *kwargs;           /* NULL = [] / {} */
	json_t *callbacks, *errbacks;    /* arrays of signature dicts or NULL */
	json_t *chain;                   /* array, next step last, or NULL */
	json_t *chord;                   /* chord body signature or NULL */
	const char *group_id;
	int64_t group_index;             /* -1 = none */
	const char *root_id;             /* NULL = id */
	const char *parent_id, *eta, *expires, *shadow, *reply_to, *origin;
	double time_limit, soft_time_limit; /* 0 = none */
	int64_t retries;
	bool ignore_result;
	const char *queue;               /* where to publish (set by cw_proto_sig_to_msg) */
	const char *exchange, *routing_key;
	int priority;
	const char *delivery_tag;        /* NULL = id */
};

/*
 * The kombu envelope (protocol v2, JSON body in base64) of m, as Celery's
 * as_task_v2 builds it.  malloc'd; NULL when task/id are missing or on ENOMEM.
 */
char *cw_proto_encode_task(const struct cw_task_msg *m, size_t *len);

/* Python repr() of a JSON value (a tuple when as_tuple and v is a list), cut at max bytes. */
char *cw_proto_pyrepr(const json_t *v, bool as_tuple, size_t max);
/* repr() of an exception from its type name and args (a list, or one value): Type('msg', ...). */
char *cw_proto_exc_repr(const char *type, const json_t *args, size_t max);

/* How a worker applies a signature (Signature.apply_async from a task). */
struct cw_sig_apply {
	const char *new_id;        /* used when the signature has no options.task_id */
	const char *new_tag;       /* delivery tag of the new message */
	const char *parent_id, *root_id; /* override the signature's options when set */
	json_t *chain;             /* remaining chain for the new message, or NULL */
	const char *default_queue; /* queue when the options name none */
	const char *origin;        /* our node name */
	double now;                /* epoch seconds, for countdown/expires in seconds */
};

/* Storage owned by a message built from a signature. */
struct cw_sig_owned {
	json_t *args, *callbacks, *errbacks;
	char eta[40], expires[40];
};

/*
 * Fill *m from a signature dict ({"task","args","kwargs","options",
 * "subtask_type","immutable"}): prepend (an array, may be NULL) goes before
 * the signature's args unless it is immutable.  Pointers in *m borrow from
 * sig, ap and *own; release *own with cw_sig_owned_clear.  CW_EINVALTASK for
 * shapes that are not a plain task signature (groups/chords/chains nested as
 * callbacks are applied by Python workers only), with err set.
 */
int cw_proto_sig_to_msg(const json_t *sig, json_t *prepend, const struct cw_sig_apply *ap,
			struct cw_task_msg *m, struct cw_sig_owned *own,
			struct cw_error *err) CW_MUST_CHECK;
void cw_sig_owned_clear(struct cw_sig_owned *own);

/* ---- Python pickles (the database result backend) ---- */

/*
 * Python pickle (protocol 4, no FRAME) of a JSON value: null -> None,
 * true/false -> True/False, integers of any size (bigints included) -> int,
 * reals -> float, strings -> str, arrays -> list, objects -> dict (insertion
 * order).  What Celery's database backend stores with
 * pickle.dumps(value, pickle.HIGHEST_PROTOCOL).  malloc'd; NULL on ENOMEM or
 * nesting deeper than 512.
 */
unsigned char *cw_pickle_dumps(const json_t *v, size_t *len);
/*
 * The inverse, for pickles made only of data opcodes: PROTO, FRAME, STOP,
 * NONE, NEWTRUE, NEWFALSE, INT (with the "01"/"00" bools of protocol 0),
 * BININT, BININT1, BININT2, LONG, LONG1, LONG4, FLOAT, BINFLOAT, UNICODE,
 * BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, SHORT_BINBYTES/BINBYTES (as str
 * when valid UTF-8, else refused), EMPTY_LIST, LIST, APPEND, APPENDS,
 * EMPTY_TUPLE, TUPLE, TUPLE1-3 (tuples become arrays), EMPTY_DICT, DICT,
 * SETITEM, SETITEMS (keys must be str), MARK, POP, POP_MARK, DUP, PUT,
 * BINPUT, LONG_BINPUT, MEMOIZE, GET, BINGET, LONG_BINGET.
 * Anything else (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ,
 * PERSID, EXT*, ...) -> NULL with CW_EDECODE "pickle opcode X (name) is not
 * allowed"; malformed or truncated data, non-str dict keys, strings that are
 * not UTF-8 and non-finite floats (JSON cannot hold them) -> CW_EDECODE;
 * nesting over lim->max_depth (memo cycles included), a memo index over
 * 1 << 20, integers over 4300 digits (Python's str() limit) or output over
 * lim->max_message -> CW_ELIMIT.  Integers outside int64 come back as
 * bigints (cw_json_bigint).  lim NULL = CW_PROTO_LIMITS_DEFAULT.
 */
/*
 * Celery's exception dict as Python pickles it for the database backend:
 * {"exc_type": type, "exc_message": tuple(args), "exc_module": module}.
 * args must be an array.  malloc'd; NULL on ENOMEM or bad arguments.
 */
unsigned char *cw_pickle_dumps_exception(const char *type, const json_t *args,
					 const char *module, size_t *len);
json_t *cw_pickle_loads(const unsigned char *p, size_t len, const struct cw_proto_limits *lim,
			struct cw_error *err);

#endif
