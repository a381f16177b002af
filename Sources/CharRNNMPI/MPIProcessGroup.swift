#if MPI
    import CCharRNNMPI
    import CharRNN
    import Foundation

    /// The processes `mpirun` started, as a `ProcessGroup` over MPI's world
    /// communicator (Open MPI; the package's `MPI` trait builds this).
    ///
    /// One per process: `world()` initialises MPI on first use, and
    /// `finalize()` ends it. Gradients are summed with `MPI_Allreduce`.
    /// Whether to use it is the caller's choice: an MPI launcher announces
    /// several processes in the environment (`OMPI_COMM_WORLD_SIZE` for
    /// Open MPI's `mpirun`).
    public final class MPIProcessGroup: ProcessGroup {
        /// This process's rank in the world.
        public let rank: Int
        /// Processes in the world.
        public let size: Int

        private init(rank: Int, size: Int) {
            self.rank = rank
            self.size = size
        }

        nonisolated(unsafe) private static var shared: MPIProcessGroup?

        /// The world group, initialising MPI the first time.
        /// - Throws: `ProcessGroupError` if MPI cannot start.
        public static func world() throws(ProcessGroupError) -> MPIProcessGroup {
            if let shared { return shared }
            var rank: Int32 = 0
            var size: Int32 = 0
            try check(charrnn_mpi_init(&rank, &size), "start MPI")
            let group = MPIProcessGroup(rank: Int(rank), size: Int(size))
            shared = group
            return group
        }

        /// Ends MPI; call once, after the last collective operation.
        /// - Throws: `ProcessGroupError` with MPI's message if it fails.
        public func finalize() throws(ProcessGroupError) {
            try Self.check(charrnn_mpi_finalize(), "finish MPI")
        }

        public func sum(_ values: UnsafeMutableBufferPointer<Float>) throws(ProcessGroupError) {
            guard let base = values.baseAddress, size > 1 else { return }
            try Self.check(charrnn_mpi_sum_floats(base, values.count), "sum gradients")
        }

        public func sum(_ values: UnsafeMutableBufferPointer<Double>) throws(ProcessGroupError) {
            guard let base = values.baseAddress, size > 1 else { return }
            try Self.check(charrnn_mpi_sum_doubles(base, values.count), "sum values")
        }

        public func gather(_ values: UnsafeBufferPointer<Float>) throws(ProcessGroupError) -> [Float] {
            var out = [Float](repeating: 0, count: rank == 0 ? values.count * size : 1)
            let code = out.withUnsafeMutableBufferPointer { charrnn_mpi_gather_floats(values.baseAddress, values.count, $0.baseAddress) }
            try Self.check(code, "gather the carried state")
            return rank == 0 ? out : []
        }

        public func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64] {
            var out = [UInt64](repeating: 0, count: size)
            let code = out.withUnsafeMutableBufferPointer { charrnn_mpi_allgather_u64(value, $0.baseAddress) }
            try Self.check(code, "compare weights")
            return out
        }

        private static func check(_ code: Int32, _ operation: String) throws(ProcessGroupError) {
            guard code != 0 else { return }
            var buffer = [CChar](repeating: 0, count: 512)
            charrnn_mpi_error_string(code, &buffer, buffer.count)
            let message = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            throw ProcessGroupError(operation: operation, message: String(decoding: message, as: UTF8.self))
        }
    }
#endif
