//! Draws the screen's lines ([`super::model::screen_lines`]) into a
//! ratatui frame: pure, so tests render into a `TestBackend` and read the
//! buffer.

use ratatui::Frame;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line as TuiLine;
use ratatui::widgets::Paragraph;

use super::model::{Line, LineKind, Order, Screen, screen_lines};
use orch_api::wire::Health;

fn style(kind: LineKind) -> Style {
    match kind {
        LineKind::Title => Style::new().add_modifier(Modifier::REVERSED),
        LineKind::Columns | LineKind::Host => Style::new().add_modifier(Modifier::BOLD),
        LineKind::Gpu => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        LineKind::Agent(Health::Unhealthy) => Style::new().fg(Color::Red),
        LineKind::Agent(_) => Style::new(),
        LineKind::More => Style::new().add_modifier(Modifier::DIM),
        LineKind::Status { error: true } => Style::new().fg(Color::Red),
        LineKind::Status { error: false } => Style::new().add_modifier(Modifier::DIM),
    }
}

/// The whole screen into the frame's area; the status line at the bottom.
pub fn draw(frame: &mut Frame<'_>, screen: &Screen, order: Order) {
    let area = frame.area();
    let mut lines: Vec<Line> = screen_lines(screen, order, usize::from(area.height));
    // The status line stays at the bottom however short the body.
    let status = match lines.last() {
        Some(l) if matches!(l.kind, LineKind::Status { .. }) && lines.len() > 1 => lines.pop(),
        _ => None,
    };
    let body: Vec<TuiLine<'_>> = lines
        .iter()
        .map(|l| TuiLine::styled(l.text.clone(), style(l.kind)))
        .collect();
    frame.render_widget(Paragraph::new(body), area);
    if let Some(s) = status {
        let mut bottom = area;
        bottom.y = area.y + area.height.saturating_sub(1);
        bottom.height = 1;
        frame.render_widget(
            Paragraph::new(TuiLine::styled(s.text, style(s.kind))),
            bottom,
        );
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is the failure report.
    #![allow(clippy::unwrap_used)]

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    use super::*;
    use crate::top::model::sample::host;
    use crate::top::model::{Figures, KEYS, SortKey};

    fn render(screen: &Screen, order: Order, width: u16, height: u16) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, screen, order)).unwrap();
        t.backend().buffer().clone()
    }

    fn rows(b: &Buffer) -> Vec<String> {
        (0..b.area.height)
            .map(|y| {
                (0..b.area.width)
                    .map(|x| b[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn screen(figures: Figures) -> Screen {
        Screen {
            figures,
            as_of: Some("01:02:03".into()),
            ..Screen::default()
        }
    }

    const BY_MEM: Order = Order {
        key: SortKey::Mem,
        reverse: false,
    };

    #[test]
    fn the_frame_has_gpu_headings_columns_and_rows_by_memory() {
        let b = render(&screen(host()), BY_MEM, 100, 14);
        let r = rows(&b);
        let expected = [
            "orchestratorctl top: 5 replica(s), by GPU memory, as of 01:02:03",
            "  AGENT          SLICE        CPU   GPU MEM            GPU UTIL  HEALTH     PHASE",
            "GPU 0  NVIDIA GeForce RTX 4090  memory 11.0g/24.0g (45%)  util 55%  3 replica(s)",
            "  vision/Eyes#1  mps 8g 25%   150%  6.0g/8.0g (75%)    70%       unhealthy  running",
            "  speech/Ears    mps 4g 25%   -     3.0g/4.0g (75%)    40%       -          running",
            "  vision/Eyes    mps 8g 25%   12%   2.0g/8.0g (25%)    10%       healthy    running",
            "GPU 1  NVIDIA A100-SXM4-40GB  memory 18.0g/40.0g (45%)  util 95%  1 replica(s)",
            "  llm/Big        mps 20g 25%  80%   18.0g/20.0g (90%)  95%       healthy    running",
            "no GPU slice  1 replica(s)",
            "  infra/Memory   -            5%    -                  -         healthy    running",
            "",
            "",
            "",
            KEYS,
        ];
        assert_eq!(r, expected);
        // The unhealthy row in red, GPU headings bold.
        assert_eq!(b[(4, 3)].fg, Color::Red);
        assert!(b[(0, 2)].modifier.contains(Modifier::BOLD));
        assert_eq!(b[(4, 4)].fg, Color::Reset);
    }

    #[test]
    fn a_short_terminal_keeps_the_status_line_and_says_what_is_left_out() {
        let mut s = screen(host());
        s.error = Some("the daemon cannot be reached; trying again".into());
        let r = rows(&render(&s, BY_MEM, 100, 6));
        assert_eq!(r.len(), 6);
        assert!(r[0].starts_with("orchestratorctl top:"), "{r:#?}");
        assert!(r[4].contains("6 more line(s)"), "{r:#?}");
        assert_eq!(r[5], "the daemon cannot be reached; trying again");
    }

    #[test]
    fn the_fleet_shows_each_host_its_state_and_a_host_column() {
        use orch_api::PeerState;
        let mut f = host();
        f.fleet = true;
        f.hosts[0].host = "mainpc".into();
        f.hosts[0].state = Some(PeerState::Local);
        let mut pc2 = f.hosts[0].clone();
        pc2.host = "pc2".into();
        pc2.state = Some(PeerState::Down);
        pc2.age_ms = Some(12_300);
        f.hosts.push(pc2);
        f.hosts.push(crate::top::model::HostFigures {
            host: "pc3".into(),
            state: Some(PeerState::Unknown),
            age_ms: None,
            agents: None,
            gpu: None,
        });
        let r = rows(&render(&screen(f), BY_MEM, 110, 30));
        assert!(r[0].contains("3 host(s), 10 replica(s)"), "{r:#?}");
        assert!(r[1].starts_with("  HOST    AGENT"), "{r:#?}");
        assert_eq!(r[2], "== mainpc (this host)");
        assert!(r[4].starts_with("  mainpc  vision/Eyes#1"), "{r:#?}");
        let pc2 = r.iter().position(|l| l.starts_with("== pc2")).unwrap();
        assert_eq!(r[pc2], "== pc2 (DOWN; last known state, as of 12.3s ago)");
        assert!(r[pc2 + 2].starts_with("  pc2     vision/Eyes#1"), "{r:#?}");
        assert!(
            r.contains(
                &"== pc3 (not heard from): no state received from this host yet".to_string()
            ),
            "{r:#?}"
        );
    }
}
