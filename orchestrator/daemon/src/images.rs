//! Which of a config's images the Docker Engine does not have, asked
//! before `apply` and `plan` (`crate::service`): a replica whose image is
//! missing cannot have its container made, so `apply` refuses such a file
//! (unless forced) and `plan` lists them, before anything changes.
//!
//! One `inspect image` per distinct image, at most [`MAX_IMAGES`] of them
//! and [`CHECK_LIMIT`] in all: the check is advice, and must not hold a
//! request up. An image Docker could not be asked about (unreachable, slow,
//! past the count) is unknown, never missing.

use std::collections::BTreeSet;
use std::time::Duration;

use orch_core::model::HostConfig;
use orch_docker::{ContainerRuntime, DockerError};

/// The most distinct images asked about for one request.
pub const MAX_IMAGES: usize = 64;

/// The time all the asking may take for one request.
pub const CHECK_LIMIT: Duration = Duration::from_secs(2);

/// The distinct images of a config's agents, in name order.
pub fn of_config(config: &HostConfig) -> Vec<String> {
    config
        .agents()
        .map(|a| a.image.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The images of `images` Docker says it does not have, in the order
/// given; only the first [`MAX_IMAGES`] are asked about, within `limit`.
pub async fn missing(rt: &dyn ContainerRuntime, images: &[String], limit: Duration) -> Vec<String> {
    missing_by(images, limit, |image| rt.image_exists(image)).await
}

/// [`missing`], asking `exists`.
async fn missing_by<'a, F, Fut>(images: &'a [String], limit: Duration, exists: F) -> Vec<String>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<bool, DockerError>>,
{
    let mut missing = Vec::new();
    let ask = async {
        for image in images.iter().take(MAX_IMAGES) {
            match exists(image).await {
                Ok(false) => missing.push(image.clone()),
                Ok(true) => {}
                Err(e) if e.is_unreachable() => {
                    tracing::debug!("cannot ask Docker for the config's images: {e}");
                    return;
                }
                Err(e) => tracing::debug!(image = %image, "cannot ask Docker for the image: {e}"),
            }
        }
    };
    if tokio::time::timeout(limit, ask).await.is_err() {
        tracing::debug!(
            "Docker took longer than {limit:?} to say which images it has; the rest are unknown"
        );
    }
    missing
}

#[cfg(test)]
mod tests {
    use orch_docker::fake::{Call, FakeRuntime};

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("image-{i:03}:latest")).collect()
    }

    #[tokio::test]
    async fn only_the_images_docker_lacks_are_missing() {
        let rt = FakeRuntime::new();
        rt.strict_images();
        rt.add_image("here:1");
        let asked = vec!["here:1".to_string(), "gone:2".to_string()];
        assert_eq!(missing(&rt, &asked, CHECK_LIMIT).await, ["gone:2"]);
    }

    #[tokio::test]
    async fn an_unreachable_docker_makes_no_image_missing() {
        let rt = FakeRuntime::new();
        rt.strict_images();
        rt.set_unreachable(true);
        assert!(missing(&rt, &names(3), CHECK_LIMIT).await.is_empty());
        // Asked once, not once per image.
        assert_eq!(rt.calls().len(), 1);
    }

    #[tokio::test]
    async fn an_image_docker_fails_to_answer_for_is_unknown() {
        let rt = FakeRuntime::new();
        rt.strict_images();
        rt.fail_next(
            orch_docker::fake::Op::ImageExists,
            DockerError::Api {
                status: 500,
                message: "busy".into(),
            },
        );
        let asked = names(2);
        assert_eq!(missing(&rt, &asked, CHECK_LIMIT).await, [asked[1].clone()]);
    }

    #[tokio::test]
    async fn no_more_than_the_bound_is_asked_about() {
        let rt = FakeRuntime::new();
        rt.strict_images();
        let asked = names(MAX_IMAGES + 5);
        let found = missing(&rt, &asked, CHECK_LIMIT).await;
        assert_eq!(found.len(), MAX_IMAGES);
        let calls = rt.calls();
        assert_eq!(calls.len(), MAX_IMAGES);
        assert_eq!(
            calls.last(),
            Some(&Call::ImageExists {
                image: asked[MAX_IMAGES - 1].clone()
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_docker_is_given_the_limit_and_no_more() {
        let asked = names(3);
        let started = tokio::time::Instant::now();
        // The first answer comes at once; the second never comes.
        let first = asked[0].clone();
        let found = missing_by(&asked, Duration::from_millis(1500), |image| {
            let answers = image == first;
            async move {
                if !answers {
                    std::future::pending::<()>().await;
                }
                Ok(false)
            }
        })
        .await;
        assert_eq!(found, [first]);
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
    }
}
