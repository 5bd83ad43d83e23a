import Foundation

/// A cron expression (the five fields of crontab(5): minute, hour, day of month, month, day of
/// week) evaluated in a time zone. Lists, ranges, steps, month and weekday names and the
/// `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually` shorthands are
/// accepted. As in Vixie cron, when both day fields are restricted a day matching either runs.
/// Across daylight-saving changes a time that does not exist that day runs once, right after the
/// clocks move; a time that exists twice runs once, at its first occurrence.
public struct CronSchedule: Equatable, Sendable, CustomStringConvertible {
    public let expression: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let days: Set<Int>
    let months: Set<Int>
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    public var description: String { expression }

    public struct ParseError: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    static let shorthands = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    public init(_ expression: String) throws {
        let text = expression.trimmingCharacters(in: .whitespaces)
        self.expression = text
        let expanded = CronSchedule.shorthands[text.lowercased()] ?? text
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(reason: "'\(text)' has \(fields.count) fields; a cron expression has 5 (minute hour day-of-month month day-of-week) or is @daily, @hourly, ...")
        }
        minutes = try CronSchedule.field(fields[0], name: "minute", 0...59, names: [])
        hours = try CronSchedule.field(fields[1], name: "hour", 0...23, names: [])
        days = try CronSchedule.field(fields[2], name: "day of month", 1...31, names: [])
        months = try CronSchedule.field(fields[3], name: "month", 1...12, names: CronSchedule.monthNames, nameBase: 1)
        // 7 is Sunday too.
        weekdays = Set(try CronSchedule.field(fields[4], name: "day of week", 0...7, names: CronSchedule.dayNames).map { $0 % 7 })
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
    }

    static func field(_ text: String, name: String, _ range: ClosedRange<Int>, names: [String], nameBase: Int = 0) throws -> Set<Int> {
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s), range.contains(n) { return n }
            if let i = names.firstIndex(of: s.lowercased()) { return i + nameBase }
            throw ParseError(reason: "\(name): '\(s)' is not in \(range.lowerBound)-\(range.upperBound)")
        }
        var out = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard (1...2).contains(pieces.count), !pieces[0].isEmpty else { throw ParseError(reason: "\(name): '\(part)' is not a value, range or step") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw ParseError(reason: "\(name): step '\(pieces[1])' is not a positive number") }
                step = s
            }
            let lo: Int, hi: Int
            if pieces[0] == "*" {
                (lo, hi) = (range.lowerBound, range.upperBound)
            } else if let dash = pieces[0].firstIndex(of: "-") {
                lo = try value(pieces[0][..<dash])
                hi = try value(pieces[0][pieces[0].index(after: dash)...])
                guard lo <= hi else { throw ParseError(reason: "\(name): range '\(pieces[0])' runs backwards") }
            } else {
                lo = try value(pieces[0])
                hi = pieces.count == 2 ? range.upperBound : lo
            }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out
    }

    func matches(day: Int, month: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        switch (daysRestricted, weekdaysRestricted) {
        case (true, true): return days.contains(day) || weekdays.contains(weekday)
        case (true, false): return days.contains(day)
        case (false, true): return weekdays.contains(weekday)
        case (false, false): return true
        }
    }

    /// The first time strictly after `date` that the schedule names, or nil if none within
    /// about five years (`0 0 30 2 *` never comes).
    public func next(after date: Date, in zone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let sortedHours = hours.sorted()
        let sortedMinutes = minutes.sorted()
        var day = calendar.startOfDay(for: date)
        for _ in 0..<(366 * 5) {
            let c = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if matches(day: c.day!, month: c.month!, weekday: c.weekday! - 1) {
                for h in sortedHours {
                    for m in sortedMinutes {
                        var wanted = DateComponents()
                        (wanted.year, wanted.month, wanted.day, wanted.hour, wanted.minute) = (c.year, c.month, c.day, h, m)
                        // A local time skipped by a daylight-saving change comes back moved forward.
                        if let candidate = calendar.date(from: wanted), candidate > date { return candidate }
                    }
                }
            }
            guard let nextDay = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = calendar.startOfDay(for: nextDay)
        }
        return nil
    }
}
