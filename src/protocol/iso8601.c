/* ISO-8601 timestamps as Python's datetime.isoformat() writes them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "protocol/protocol.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long)doe - 719468;
}

static int digits(const char **p, int n, long *out)
{
	long v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int cw_proto_parse_iso8601(const char *s, bool utc, double *out)
{
	long y, mo, d, h = 0, mi = 0, sec = 0, oh, om;
	double frac = 0, offset = 0;
	const char *p = s;
	(void)utc; /* naive times are taken as UTC either way: cworker runs in UTC */

	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d))
		return CW_EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return CW_EINVAL;
	if (*p == 'T' || *p == ' ') {
		p++;
		if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
			return CW_EINVAL;
		if (*p == ':') {
			p++;
			if (digits(&p, 2, &sec))
				return CW_EINVAL;
			if (*p == '.' || *p == ',') {
				p++;
				double scale = 0.1;
				int n = 0;
				while (*p >= '0' && *p <= '9') {
					if (n++ < 9)
						frac += (*p - '0') * scale;
					scale /= 10;
					p++;
				}
				if (n == 0)
					return CW_EINVAL;
			}
		}
		if (h > 24 || mi > 59 || sec > 60)
			return CW_EINVAL;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;
		if (digits(&p, 2, &oh))
			return CW_EINVAL;
		if (*p == ':')
			p++;
		if (digits(&p, 2, &om) || oh > 23 || om > 59)
			return CW_EINVAL;
		offset = sign * (double)(oh * 3600 + om * 60);
	}
	if (*p)
		return CW_EINVAL;
	*out = (double)days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400.0 +
	       (double)(h * 3600 + mi * 60 + sec) + frac - offset;
	return CW_OK;
}

void cw_proto_format_iso8601(double epoch, char out[32])
{
	double whole = floor(epoch);
	long usec = lround((epoch - whole) * 1e6);
	long long t = (long long)whole;
	if (usec >= 1000000) {
		usec -= 1000000;
		t++;
	}
	long long days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	long rem = (long)(t - days * 86400);
	/* civil_from_days */
	long long z = days + 719468;
	long long era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long long y = (long long)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	unsigned d = doy - (153 * mp + 2) / 5 + 1;
	unsigned m = mp < 10 ? mp + 3 : mp - 9;
	y += m <= 2;
	/* all fields are in range here; the casts tell the compiler their width */
	snprintf(out, 32, "%04d-%02u-%02uT%02d:%02d:%02d.%06d", (int)(y % 10000), m % 100u, d % 100u,
		 (int)(rem / 3600 % 100), (int)(rem / 60 % 60), (int)(rem % 60), (int)(usec % 1000000));
}
