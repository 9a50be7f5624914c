//! The pages' words: each answer of the contract as a clear message with the
//! next step, in Japanese (as the bank's customers read it) and English.

use ichido_domain::model::{Role, TokenKind, TokenState};
use ichido_domain::DomainError;

use super::Notice;

/// The customer-facing message of a refusal: what happened and what to do.
/// Never echoes a submitted value.
pub fn refusal(e: &DomainError) -> Notice {
    let (ja, en) = match e {
        DomainError::InvalidRequest(_) => (
            "入力内容に誤りがあります。各項目の形式をご確認のうえ、もう一度入力してください。",
            "Some input is not in the expected form. Check each field and try again.",
        ),
        DomainError::Unauthorized => (
            "ログインの有効期限が切れました。もう一度ログインしてください。",
            "Your session has ended. Please log in again.",
        ),
        DomainError::InvalidCredentials => (
            "入力された情報が正しくありません。契約者番号・利用者ID・パスワード・ワンタイムパスワードをご確認ください。",
            "The details you entered are not correct. Check the contract number, user ID, passwords and one-time password.",
        ),
        DomainError::InvalidOtp => (
            "ワンタイムパスワードが正しくありません。新しいワンタイムパスワードを入力してください。",
            "The one-time password is not correct. Enter a new one.",
        ),
        DomainError::OtpReplayed => (
            "このワンタイムパスワードは使用済みです。新しいワンタイムパスワードを表示して入力してください。",
            "This one-time password has already been used. Show a new one and enter it.",
        ),
        DomainError::OtpRequired => (
            "ワンタイムパスワードの入力が必要です。ソフトウェアトークンに表示された6桁の数字を入力してください。",
            "A one-time password is required. Enter the digits your soft token shows.",
        ),
        DomainError::OtpRegistrationRequired => (
            "ご利用にはワンタイムパスワードの利用開始登録が必要です。「利用開始登録」から登録してください。",
            "You must register a one-time-password token first. Use \"Register a token\".",
        ),
        DomainError::TokenSuspended => (
            "ワンタイムパスワードは一時停止中で、猶予期間が終了しています。当行へ一時停止解除の届出をしてください。",
            "Your token is suspended and the grace period is over. Send the bank a resume form (一時停止解除).",
        ),
        DomainError::TokenRevoked => (
            "このトークンは登録解除されています。もう一度「利用開始登録」を行ってください。",
            "This token has been deregistered. Register a new token.",
        ),
        DomainError::TokenPending => (
            "トークンの利用開始登録が完了していません。最初のワンタイムパスワードで有効化してください。",
            "The token has not been activated yet. Activate it with its first one-time password.",
        ),
        DomainError::Forbidden => (
            "この操作を行う権限がありません。承認権限をお持ちの方に依頼してください。",
            "You are not allowed to do this. Ask a user with approval authority.",
        ),
        DomainError::NotFound(_) => (
            "お探しの情報が見つかりません。入力内容をご確認ください。",
            "Nothing was found. Check what you entered.",
        ),
        DomainError::TokenExists => (
            "この利用者はすでにトークンを登録済みです。別のパソコンで利用するには、当行へ登録解除の届出をしてから再登録してください。",
            "This user already has a token. To use another PC, send the bank a deregistration form, then register again.",
        ),
        DomainError::Conflict(_) => (
            "この取引はすでに処理済みです。取引一覧で状態をご確認ください。",
            "This has already been processed. Check its state in the list.",
        ),
        DomainError::TokenLocked => (
            "ワンタイムパスワードを続けて誤ったため、トークンが閉塞しました。当行へ閉塞解除の届出をしてください。",
            "Your token is locked after too many wrong one-time passwords. Send the bank an unlock form (閉塞解除).",
        ),
        DomainError::UserLocked => (
            "パスワードを続けて誤ったため、ご利用を停止しています。当行へパスワードロック解除の届出をしてください。",
            "Access is locked after too many wrong passwords. Ask the bank to clear the password lock.",
        ),
        DomainError::RateLimited => (
            "短時間にアクセスが集中しています。しばらく待ってからもう一度お試しください。",
            "Too many requests. Wait a moment and try again.",
        ),
        DomainError::Unavailable | DomainError::Internal(_) => (
            "ただいまサービスを利用できません。しばらく待ってからもう一度お試しください。",
            "The service is temporarily unavailable. Please try again later.",
        ),
        // Answers of operator-only services (e.g. bulk import) never reach a customer page.
        #[allow(unreachable_patterns)]
        _ => (
            "入力内容に誤りがあります。もう一度入力してください。",
            "The request could not be processed. Check what you entered and try again.",
        ),
    };
    Notice::error(ja, en)
}

/// The refusal of a form whose CSRF token or origin did not check out.
pub fn stale_form() -> Notice {
    Notice::error(
        "画面の有効期限が切れたか、正しくない画面から送信されました。画面を開き直して、もう一度入力してください。",
        "This form has expired or was not sent from this site. Open the page again and retry.",
    )
}

/// The refusal of the per-user rate limit.
pub fn rate_limited() -> Notice {
    refusal(&DomainError::RateLimited)
}

pub fn role_ja(r: Role) -> &'static str {
    match r {
        Role::Administrator => "サービス管理責任者",
        Role::Approver => "承認権限",
        Role::Applicant => "申請権限",
        Role::Viewer => "照会権限",
    }
}

pub fn state_ja(s: TokenState) -> &'static str {
    match s {
        TokenState::Pending => "登録手続中",
        TokenState::Active => "利用中",
        TokenState::Suspended => "一時停止中",
        TokenState::Locked => "閉塞中",
        TokenState::Revoked => "登録解除済み",
    }
}

pub fn kind_ja(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Event => "イベント型（ボタンを押して表示）",
        TokenKind::Time => "時刻型（30秒ごとに更新）",
    }
}

/// `YYYY-MM-DD HH:MM` in Japan time (the bank's customers' clock).
pub fn jst(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix.saturating_add(9 * 3600))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} JST",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// An amount in yen with thousands separators.
pub fn yen(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if amount < 0 {
        out.insert(0, '-');
    }
    format!("{out} 円")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(yen(1_234_567), "1,234,567 円");
        assert_eq!(yen(12), "12 円");
        assert_eq!(yen(-1000), "-1,000 円");
        assert_eq!(jst(0), "1970-01-01 09:00 JST");
    }

    #[test]
    fn every_refusal_has_both_languages() {
        for e in [
            DomainError::InvalidCredentials,
            DomainError::TokenLocked,
            DomainError::TokenSuspended,
            DomainError::Internal("db at 10.0.0.7 refused".into()),
        ] {
            let n = refusal(&e);
            assert!(!n.ja.is_empty() && !n.en.is_empty());
            assert!(!n.en.contains("10.0.0.7"), "internal detail never shown");
        }
    }
}
