#if Server
    /// The playground's static files, compiled into the executable (no CDN, no
    /// files to install beside it).
    enum Playground {
        struct File: Sendable {
            let path: String
            let contentType: String
            let bytes: [UInt8]
        }

        static let files: [File] = [
            File(path: "/", contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
            File(path: "/playground.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.playground_js),
            File(path: "/explain.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.explain_js),
            File(path: "/playground.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.playground_css),
        ]

        /// Served without an API key: a browser cannot send one when it loads a
        /// page, and they hold no model data (the page sends the key it is given
        /// with every API call).
        static var paths: [String] { files.map(\.path) }
    }
#endif
