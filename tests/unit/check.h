/* The unit tests' one assertion: count, report file:line and go on. */
#ifndef CW_TEST_CHECK_H
#define CW_TEST_CHECK_H

#include <stdio.h>

static int failures, checks;

#define CHECK(cond)                                                                       \
	do {                                                                              \
		checks++;                                                                 \
		if (!(cond)) {                                                            \
			failures++;                                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                         \
	} while (0)

/* main()'s last words: the summary line and the exit status. */
static inline int check_summary(void)
{
	printf("%d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}

#endif
