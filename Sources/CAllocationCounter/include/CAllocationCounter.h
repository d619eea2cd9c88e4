#ifndef C_ALLOCATION_COUNTER_H
#define C_ALLOCATION_COUNTER_H

/// Number of malloc/calloc/realloc/posix_memalign/aligned_alloc calls so far in
/// this process (glibc only; -1 where counting is not available).
long sluice_allocation_count(void);

#endif
