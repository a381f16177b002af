/* See charrnn_mpi.h. Compiled to nothing unless the package's MPI trait is on. */
#include "charrnn_mpi.h"

#ifdef CHARRNN_WITH_MPI
#if !__has_include(<mpi.h>)
#error "charrnn: the MPI trait needs MPI's mpi.h, and pkg-config found no module named by CHARRNN_MPI (default ompi-c); install Open MPI (Debian and Ubuntu: libopenmpi-dev, or Tools/install-deps --mpi), set PKG_CONFIG_PATH to the directory of its .pc file, or CHARRNN_MPI to your MPI's pkg-config module (mpich, mpi)"
#else
#include <limits.h>
#include <mpi.h>
#include <string.h>

int charrnn_mpi_init(int32_t *rank, int32_t *size) {
    int initialised = 0, rc = MPI_Initialized(&initialised);
    if (rc != MPI_SUCCESS) return rc;
    if (!initialised && (rc = MPI_Init(NULL, NULL)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)) != MPI_SUCCESS) return rc;
    int r = 0, s = 0;
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &r)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, &s)) != MPI_SUCCESS) return rc;
    *rank = r;
    *size = s;
    return MPI_SUCCESS;
}

int charrnn_mpi_finalize(void) {
    int finalised = 0;
    MPI_Finalized(&finalised);
    return finalised ? MPI_SUCCESS : MPI_Finalize();
}

/* MPI counts are int: a block of more than INT_MAX elements goes in pieces. */
static int sum_in_pieces(void *values, size_t count, size_t element, MPI_Datatype type) {
    char *at = values;
    while (count > 0) {
        int n = count > (size_t)INT_MAX ? INT_MAX : (int)count;
        int rc = MPI_Allreduce(MPI_IN_PLACE, at, n, type, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
        at += (size_t)n * element;
        count -= (size_t)n;
    }
    return MPI_SUCCESS;
}

int charrnn_mpi_sum_floats(float *values, size_t count) {
    return sum_in_pieces(values, count, sizeof(float), MPI_FLOAT);
}

int charrnn_mpi_sum_doubles(double *values, size_t count) {
    return sum_in_pieces(values, count, sizeof(double), MPI_DOUBLE);
}

int charrnn_mpi_gather_floats(const float *values, size_t count, float *out) {
    if (count > (size_t)INT_MAX) return MPI_ERR_COUNT;
    return MPI_Gather(values, (int)count, MPI_FLOAT, out, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

int charrnn_mpi_allgather_u64(uint64_t value, uint64_t *out) {
    return MPI_Allgather(&value, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, MPI_COMM_WORLD);
}

void charrnn_mpi_error_string(int code, char *buffer, size_t size) {
    char message[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, message, &length) != MPI_SUCCESS) length = 0;
    message[length < MPI_MAX_ERROR_STRING ? length : MPI_MAX_ERROR_STRING - 1] = '\0';
    if (size > 0) {
        strncpy(buffer, length > 0 ? message : "unknown MPI error", size - 1);
        buffer[size - 1] = '\0';
    }
}
#endif /* __has_include(<mpi.h>) */
#endif
