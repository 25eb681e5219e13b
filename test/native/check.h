/*
 * The native tests' checks: CHECK and CHECK_EQ count a failure in the
 * running test and say where; RUN runs one test function and prints
 * "ok"/"FAIL" with its name; a test's main ends with
 * printf("%d passed, %d failed\n", g_passed, g_failed). One translation unit
 * per test binary, so the counters are that binary's own.
 */
#ifndef NKE_TEST_CHECK_H
#define NKE_TEST_CHECK_H

#include <stdio.h>

static int g_passed, g_failed, g_cur_failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            g_cur_failed++;                                                          \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)
#define CHECK_EQ(a, b)                                                                      \
    do {                                                                                    \
        long long va_ = (long long)(a), vb_ = (long long)(b);                               \
        if (va_ != vb_) {                                                                   \
            g_cur_failed++;                                                                 \
            fprintf(stderr, "  %s:%d: CHECK_EQ failed: %s == %lld, expected %s == %lld\n", \
                    __FILE__, __LINE__, #a, va_, #b, vb_);                                  \
        }                                                                                   \
    } while (0)

#define RUN(fn)                                  \
    do {                                         \
        g_cur_failed = 0;                        \
        fn();                                    \
        if (g_cur_failed) {                      \
            g_failed++;                          \
            printf("FAIL %s\n", #fn);            \
        } else {                                 \
            g_passed++;                          \
            printf("ok   %s\n", #fn);            \
        }                                        \
    } while (0)

#endif
