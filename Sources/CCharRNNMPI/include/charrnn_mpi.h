/*
 * A thin C layer between Swift and MPI: MPI's handles (MPI_COMM_WORLD,
 * MPI_FLOAT, MPI_SUM) are macros over library symbols that Swift cannot
 * import, so the few operations the trainer needs are wrapped here, over
 * the world communicator, with plain C types. This header does not include
 * mpi.h, so the package builds without Open MPI; the functions exist only
 * when it is built with the MPI trait (`swift build --traits MPI`).
 *
 * Every function returns MPI's error code (0 is MPI_SUCCESS); the world
 * communicator's error handler is set to return errors instead of
 * aborting, so the caller can report them.
 */
#ifndef CHARRNN_MPI_H
#define CHARRNN_MPI_H

#include <stddef.h>
#include <stdint.h>

/* Initialises MPI (once) and reads the world's rank and size. */
int charrnn_mpi_init(int32_t *rank, int32_t *size);
/* Finalises MPI (after every other call). */
int charrnn_mpi_finalize(void);
/* In-place element-wise sums over the world. */
int charrnn_mpi_sum_floats(float *values, size_t count);
int charrnn_mpi_sum_doubles(double *values, size_t count);
/* Every process's `count` floats, joined in rank order into `out` on rank 0 (ignored elsewhere). */
int charrnn_mpi_gather_floats(const float *values, size_t count, float *out);
/* Every process's value in rank order, on every process (`out` holds size values). */
int charrnn_mpi_allgather_u64(uint64_t value, uint64_t *out);
/* MPI's message for an error code, in `buffer` (at least 256 bytes). */
void charrnn_mpi_error_string(int code, char *buffer, size_t size);

#endif
