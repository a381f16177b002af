/*
 * Times MPI_Allreduce (in place, MPI_SUM over floats), the operation
 * charrnn's data-parallel trainer runs once per step on its gradient
 * block: median and fastest of R calls after warm-up, over the world.
 *
 *   mpicc -O2 allreduce.c -o allreduce
 *   mpirun -np 2 ./allreduce [floats] [repeats]
 *
 * floats defaults to 3,383,891 (the reference 2 x 512 LSTM over 83
 * characters, 13.5 MB). Rank 0 prints one line of JSON.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long floats = argc > 1 ? atol(argv[1]) : 3383891L;
    int repeats = argc > 2 ? atoi(argv[2]) : 30;
    if (floats < 1 || floats > 1L << 30 || repeats < 1) {
        if (rank == 0) fprintf(stderr, "allreduce: floats must be in 1 ... 2^30 and repeats at least 1\n");
        MPI_Finalize();
        return 2;
    }
    float *values = malloc((size_t)floats * sizeof(float));
    double *seconds = malloc((size_t)repeats * sizeof(double));
    if (!values || !seconds) MPI_Abort(MPI_COMM_WORLD, 1);
    for (long i = 0; i < floats; i++) values[i] = (float)(i % 7) * 1e-3f;
    for (int i = -3; i < repeats; i++) { /* three warm-up calls */
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, values, (int)floats, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double elapsed = MPI_Wtime() - start, slowest = 0;
        /* the call ends at different times on each rank: take the slowest */
        MPI_Allreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (i >= 0) seconds[i] = slowest;
    }
    qsort(seconds, (size_t)repeats, sizeof(double), by_value);
    if (rank == 0) {
        double median = repeats % 2 ? seconds[repeats / 2] : (seconds[repeats / 2 - 1] + seconds[repeats / 2]) / 2;
        double bytes = (double)floats * sizeof(float);
        printf("{\"processes\": %d, \"floats\": %ld, \"bytes\": %.0f, \"repeats\": %d, \"median_ms\": %.3f, "
               "\"min_ms\": %.3f, \"bus_gbit_per_s\": %.3f}\n",
               size, floats, bytes, repeats, median * 1e3, seconds[0] * 1e3,
               2.0 * (size - 1) / size * bytes * 8 / median / 1e9);
    }
    free(values);
    free(seconds);
    MPI_Finalize();
    return 0;
}
