#include <string.h>

#include "util/script.h"

const char *cw_script_sha(const struct cw_script *s)
{
	return s->sha[0] ? s->sha : NULL;
}

bool cw_script_should_load(const struct cw_script *s)
{
	return !s->sha[0] && !s->loading && !s->refused;
}

void cw_script_loaded(struct cw_script *s, bool error, const char *str, size_t len)
{
	s->loading = false;
	if (error) {
		s->refused = true;
		return;
	}
	if (!str || len != 40)
		return;
	for (size_t i = 0; i < len; i++)
		if (!((str[i] >= '0' && str[i] <= '9') || (str[i] >= 'a' && str[i] <= 'f')))
			return;
	memcpy(s->sha, str, 40);
	s->sha[40] = '\0';
}

bool cw_script_missing(const char *err)
{
	return err && !strncmp(err, "NOSCRIPT", 8);
}
